"""deploy.sh's dead-letter alert: a log alert on Application Insights whose query matches
the record the worker logs when the host is about to poison a message."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from azure_trigger.metrics import HostLogRecorder
from core.metrics import DEAD_LETTERED, RETRIES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "azure_trigger" / "deploy.sh"


def _alert_call(tmp_path) -> list[str]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    text = SCRIPT.read_text()
    start = text.index("# --- metrics and alerts")
    block = text[start : text.index('HOST=$(az functionapp show', start)]
    out = tmp_path / "calls"
    prelude = f"""
set -euo pipefail
APP=app1; RG=rg1; QUEUE=dt-events; DT_ALERT_ACTION_GROUP=/subscriptions/s/ag/1
run() {{
  case "$*" in *"component show"*) echo /subscriptions/s/components/app1; return 0;; esac
  printf '%s\\n' "$@" >> {out}
}}
"""
    subprocess.run(["bash", "-c", prelude + block], check=True, timeout=60, capture_output=True)
    return out.read_text().splitlines()


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_dead_letter_alert_query_matches_the_workers_dead_letter_record(tmp_path):
    args = _alert_call(tmp_path)
    assert args[:4] == ["az", "monitor", "scheduled-query", "create"]
    assert args[args.index("--scopes") + 1] == "/subscriptions/s/components/app1"
    assert args[args.index("--action-groups") + 1] == "/subscriptions/s/ag/1"
    assert args[args.index("--condition") + 1] == "count 'DeadLetters' > 0"
    query = args[args.index("--condition-query") + 1].split("=", 1)[1]
    needle = re.fullmatch(r"traces \| where message has '(\w+)'", query).group(1)

    logger = logging.getLogger("test_metrics_deploy.azure")
    keep = _Keep()
    logger.addHandler(keep)
    recorder = HostLogRecorder(logger)
    recorder.count(RETRIES)
    recorder.count(DEAD_LETTERED)
    matching = [m for m in keep.messages if needle in m]
    assert len(matching) == 1 and '"dt_dead_lettered_total"' in matching[0]
