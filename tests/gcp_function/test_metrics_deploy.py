"""deploy.sh's metrics block: a log-based metric per core metric, reading the fields the
functions' JSON metric lines carry, and an alert on the dead-letter subscription backlog.
The block runs in bash with `run` recording each gcloud call instead of calling it."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from core.metrics import METRICS, QUEUE_BACKLOG
from gcp_function.metrics import RECORDER
from tests.metrics_native import parse_json_log

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "gcp_function" / "deploy.sh"


def _block() -> str:
    text = SCRIPT.read_text()
    start = text.index("# --- metrics and alerts")
    return text[start : text.index('URL="$(query', start)]


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> list[dict]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    out = tmp_path_factory.mktemp("calls")
    prelude = f"""
set -euo pipefail
G=(--project=p --quiet); PROJECT=p; DEAD_SUB=dt-events-dead-letter-sub; DT_ALERT_CHANNEL=projects/p/notificationChannels/7
n=0
query() {{ return 0; }}  # read-only look-ups (deploy-lib.sh): no alert policy exists yet
run() {{
  n=$((n+1)); printf '%s\\n' "$@" > {out}/$n.args
  for a in "$@"; do case "$a" in --config-from-file=*|--policy-from-file=*) cp "${{a#*=}}" {out}/$n.file;; esac; done
  case "$*" in *"metrics create"*) return 0;; esac
}}
"""
    subprocess.run(["bash", "-c", prelude + _block()], check=True, timeout=60)
    found = []
    for args in sorted(out.glob("*.args"), key=lambda p: int(p.stem)):
        file = args.with_suffix(".file")
        found.append({"args": args.read_text().splitlines(), "file": file.read_text() if file.exists() else None})
    return found


def test_every_core_metric_gets_a_log_based_metric_matching_its_json_lines(calls):
    created = {c["args"][4]: yaml.safe_load(c["file"]) for c in calls if c["args"][1:4] == ["logging", "metrics", "create"]}
    assert set(created) == set(METRICS) - {QUEUE_BACKLOG}  # the backlog is Pub/Sub's own metric
    for name, config in created.items():
        out = io.StringIO()
        RECORDER.stream = out
        try:
            kind = METRICS[name][0]
            dims = {"status": "202", "reason": "accepted", "outcome": "ok", "handler": "h", "eventType": "co2"}
            if kind == "histogram":
                RECORDER.observe(name, 0.5, **{k: v for k, v in dims.items() if k in ("status", "eventType")})
            else:
                RECORDER.count(name, **dims)
        finally:
            RECORDER.stream = None
        line = json.loads(out.getvalue())
        # The filter selects exactly this metric's lines.
        for field, value in re.findall(r'jsonPayload\.(\w+)="([^"]+)"', config["filter"]):
            assert line[field] == value
        assert f'jsonPayload.metric="{name}"' in config["filter"]
        for label, extractor in (config.get("labelExtractors") or {}).items():
            field = re.fullmatch(r"EXTRACT\(jsonPayload\.(\w+)\)", extractor).group(1)
            assert field in line, (name, label)
        if kind == "histogram":
            assert config["metricDescriptor"]["valueType"] == "DISTRIBUTION"
            assert config["valueExtractor"] == "EXTRACT(jsonPayload.value)" and "value" in line
        assert parse_json_log([out.getvalue()])


def test_dead_letter_alert_watches_the_dead_letter_subscription_backlog(calls):
    [policy_call] = [c for c in calls if "policies" in c["args"] and "create" in c["args"]]
    policy = json.loads(policy_call["file"])
    [condition] = policy["conditions"]
    flt = condition["conditionThreshold"]["filter"]
    assert 'resource.labels.subscription_id = "dt-events-dead-letter-sub"' in flt
    assert "pubsub.googleapis.com/subscription/num_undelivered_messages" in flt
    assert condition["conditionThreshold"]["comparison"] == "COMPARISON_GT"
    assert condition["conditionThreshold"]["thresholdValue"] == 0
    assert policy["notificationChannels"] == ["projects/p/notificationChannels/7"]
