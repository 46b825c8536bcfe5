"""Deploy wiring: scripts/wire-dt.sh (the last line of every */deploy.sh) against the stand-in,
with a real `dtconnector serve` as the deployed receiver."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.dtcloud.conftest import PROJECT, add_history

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "wire-dt.sh"
PLATFORMS = ("aws_lambda", "azure_trigger", "gcp_function", "heroku", "ibm_action")


def wire(url: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), url], env=env, capture_output=True, text=True, timeout=120)


def test_wire_applies_syncs_and_confirms_deliveries(dt_env, standin, make_serve):
    serve = make_serve().start()
    add_history(standin, devices=2, hours=2)
    proc = wire(serve.url, dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    verdict = [line for line in proc.stdout.splitlines() if line.startswith("wire-dt:")]
    assert len(verdict) == 1 and verdict[0].startswith("wire-dt: OK: DT delivered")
    assert dt_env["DT_SIGNATURE_SECRET"] not in proc.stdout + proc.stderr
    conn = next(iter(standin.projects[PROJECT].connectors.values()))
    assert conn["displayName"] == "dtconnector" and conn["httpConfig"]["url"] == serve.url
    assert serve.seen()  # the receiver really got (and verified) DT's signed sync
    again = wire(serve.url, dict(os.environ))  # a redeploy: same connector, no diff
    assert again.returncode == 0 and len(standin.projects[PROJECT].connectors) == 1
    assert "+ create" not in again.stdout and "~ " not in again.stdout


def test_wire_reports_when_dt_cannot_deliver(dt_env, standin, make_serve):
    serve = make_serve().start()
    add_history(standin, devices=1, hours=1)
    serve.stop()
    proc = wire(serve.url, {**os.environ, "DT_WIRE_WAIT_S": "2"})
    assert proc.returncode == 1
    assert "wire-dt: NOT CONFIRMED" in proc.stdout and "dtconnector connector status" in proc.stdout


def test_without_credentials_prints_the_manual_steps(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_")}
    proc = wire("https://example.com/dt", env)
    assert proc.returncode == 0
    assert "Manual steps" in proc.stdout and "https://example.com/dt" in proc.stdout


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_deploy_script_ends_by_wiring_dt(platform):
    lines = (REPO / platform / "deploy.sh").read_text().rstrip().splitlines()
    assert "scripts/wire-dt.sh" in lines[-1]
    assert sum("wire-dt.sh" in line for line in lines) == 1
