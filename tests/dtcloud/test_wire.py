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


def test_a_redeploy_keeps_what_the_user_set_in_dt(dt_env, standin, make_serve, capsys):
    """Deploy, then the user adds a header (an API key their proxy checks), picks a label key
    and an event filter and disables the connector in DT Studio; the next deploy (a new URL)
    changes only the URL and the secret, keeps the rest, and does not re-enable it."""
    serve = make_serve().start()
    add_history(standin, devices=1, hours=1)
    first = wire(serve.url, dict(os.environ))
    assert first.returncode == 0, first.stderr
    conn = next(iter(standin.projects[PROJECT].connectors.values()))
    cid = conn["name"].rsplit("/", 1)[-1]
    conn_path = f"/projects/{PROJECT}/dataconnectors/{cid}"
    from dtcloud.client import Client

    config = dict(conn["httpConfig"], headers={"X-Api-Key": "proxy-key-123"})
    Client().call("PATCH", conn_path, body={"status": "USER_DISABLED", "labels": ["room"], "events": ["touch"],
                                            "httpConfig": config})
    new_url = serve.url.rstrip("/") + "/v2"
    second = wire(new_url, {**os.environ, "DT_SIGNATURE_SECRET": "a-rotated-deployment-secret-0123456789"})
    assert second.returncode == 0, second.stdout + second.stderr
    after = standin.projects[PROJECT].connectors[cid]
    assert after["httpConfig"]["url"] == new_url
    assert after["httpConfig"]["signatureSecret"] == "a-rotated-deployment-secret-0123456789"
    assert after["httpConfig"]["headers"] == {"X-Api-Key": "proxy-key-123"}
    assert (after["status"], after["labels"], after["events"]) == ("USER_DISABLED", ["room"], ["touch"])
    out = second.stdout
    assert "connector is disabled in DT (USER_DISABLED); not enabling it: run `dtconnector connector enable" in out
    kept = [line for line in out.splitlines() if line.startswith("kept as DT has them: ")]
    assert len(kept) == 1 and "status USER_DISABLED" in kept[0] and "labels [room]" in kept[0]
    assert "httpConfig.headers.X-Api-Key (set)" in kept[0] and "proxy-key-123" not in out + second.stderr
    assert "rotated-deployment-secret" not in out + second.stderr
    assert not [r for r in standin.requests if r[1].endswith(":sync")][1:]  # no sync into a disabled connector

    third = wire(new_url, {**os.environ, "DT_SIGNATURE_SECRET": "a-rotated-deployment-secret-0123456789"})
    assert third.returncode == 0 and "~ " not in third.stdout  # nothing left to change
    assert standin.projects[PROJECT].connectors[cid]["status"] == "USER_DISABLED"


def test_wire_sets_the_event_filter_only_while_dt_has_none(dt_env, standin, make_serve, tmp_path):
    (tmp_path / "wire_handlers.py").write_text("from core import on\n@on('temperature')\ndef t(event): pass\n")
    env = {**os.environ, "DT_HANDLERS": "wire_handlers", "PYTHONPATH": str(tmp_path)}
    serve = make_serve().start()
    add_history(standin, devices=1, hours=1)
    first = wire(serve.url, env)
    assert first.returncode == 0, first.stdout + first.stderr
    (conn,) = standin.projects[PROJECT].connectors.values()
    assert conn["events"] == ["temperature"]  # a new connector: what the handlers use
    conn["events"] = ["touch"]  # the user's choice in DT Studio
    proc = wire(serve.url, env)
    assert proc.returncode == 0 and conn["events"] == ["touch"]  # kept: not even PATCHed
    assert "leaves out temperature, which your handlers use" in proc.stdout
    conn["events"] = []  # "all types": no filter set, so wiring sets the handlers' one
    assert wire(serve.url, env).returncode == 0
    (conn,) = standin.projects[PROJECT].connectors.values()
    assert conn["events"] == ["temperature"]


def test_wire_refuses_an_http_url_dt_would_refuse(dt_env, standin):
    proc = wire("http://rx.example.com/", dict(os.environ))
    assert proc.returncode == 2 and "DT delivers only to https:// URLs" in proc.stderr
    assert not standin.projects[PROJECT].connectors


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
