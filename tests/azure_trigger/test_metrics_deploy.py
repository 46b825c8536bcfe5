"""deploy.sh's dead-letter alert: a log alert on Application Insights whose query matches
the record the worker logs when the host is about to poison a message."""

from __future__ import annotations

import json
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


def _alert_rule(tmp_path) -> tuple[list[str], dict]:
    """The `az` call deploy.sh's alert block makes, and the rule it sends (the JSON file)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    text = SCRIPT.read_text()
    start = text.index("# --- metrics and alerts")
    block = text[start : text.index("HOST=$(query", start)]
    out, rule = tmp_path / "calls", tmp_path / "rule.json"
    prelude = f"""
set -euo pipefail
APP=app1; RG=rg1; QUEUE=dt-events; LOCATION=westeurope; DT_ALERT_ACTION_GROUP=/subscriptions/s/ag/1
query() {{ echo /subscriptions/s/components/app1; }}
run() {{
  printf '%s\\n' "$@" >> {out}
  for word in "$@"; do case "$word" in @*) cp "${{word#@}}" {rule};; esac; done
}}
"""
    subprocess.run(["bash", "-c", prelude + block], check=True, timeout=60, capture_output=True)
    return out.read_text().splitlines(), json.loads(rule.read_text())


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_dead_letter_alert_query_matches_the_workers_dead_letter_record(tmp_path):
    args, rule = _alert_rule(tmp_path)
    assert args[:3] == ["az", "resource", "create"]
    assert args[args.index("--resource-type") + 1] == "Microsoft.Insights/scheduledQueryRules"
    props = rule["properties"]
    assert props["scopes"] == ["/subscriptions/s/components/app1"]
    assert props["actions"]["actionGroups"] == ["/subscriptions/s/ag/1"]
    [criterion] = props["criteria"]["allOf"]
    assert (criterion["timeAggregation"], criterion["operator"], criterion["threshold"]) == ("Count", "GreaterThan", 0)
    needle = re.fullmatch(r"traces \| where message has '(\w+)'", criterion["query"]).group(1)

    logger = logging.getLogger("test_metrics_deploy.azure")
    keep = _Keep()
    logger.addHandler(keep)
    recorder = HostLogRecorder(logger)
    recorder.count(RETRIES)
    recorder.count(DEAD_LETTERED)
    matching = [m for m in keep.messages if needle in m]
    assert len(matching) == 1 and '"dt_dead_lettered_total"' in matching[0]
