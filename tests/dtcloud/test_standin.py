"""The stand-in itself answers DT's client as DT's REST API docs describe: token exchange, pagination,
filters (emulator/dtapi.py lists the pages)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import requests

from dtcloud.client import Client, DTError
from core.times import rfc3339
from tests.dtcloud.conftest import EMAIL, KEY_ID, PROJECT, add_history


def assertion(standin, secret: str, **over) -> str:
    now = int(time.time())
    claims = {"iat": now, "exp": now + 3600, "aud": standin.token_url, "iss": EMAIL, **over}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": KEY_ID})


@pytest.mark.parametrize("over", [{"aud": "https://elsewhere/token"}, {"iss": "other@x"},
                                  {"exp": int(time.time()) - 10}])
def test_token_endpoint_verifies_the_assertion(dt_env, standin, sa_secret, over):
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    ok = requests.post(standin.token_url, data={**form, "assertion": assertion(standin, sa_secret)}, timeout=5)
    assert ok.status_code == 200 and ok.json()["expires_in"] == 3600
    bad = requests.post(standin.token_url, data={**form, "assertion": assertion(standin, sa_secret, **over)}, timeout=5)
    assert bad.status_code == 400
    forged = requests.post(standin.token_url, data={**form, "assertion": assertion(standin, "guess")}, timeout=5)
    assert forged.status_code == 400


def test_api_needs_a_token(dt_env, standin):
    r = requests.get(f"{standin.api_url}/projects/{PROJECT}/devices", timeout=5)
    assert r.status_code == 401 and set(r.json()) == {"error", "code", "help"}


def test_history_pagination_and_filters_through_the_client(dt_env, standin):
    events = add_history(standin, devices=4, hours=10)  # page size 3: devices and events span pages
    client = Client()
    assert sorted(d["name"].rsplit("/", 1)[-1] for d in client.devices(PROJECT)) == ["dev00", "dev01", "dev02",
                                                                                       "dev03"]
    now = datetime.now(timezone.utc)
    got = client.events(PROJECT, "dev01", rfc3339(now - timedelta(hours=4, minutes=30)), rfc3339(now), ["touch"])
    want = [e for e in events if e["targetName"].endswith("dev01") and e["eventType"] == "touch"
            and datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) >= now - timedelta(hours=4, minutes=30)]
    assert sorted(e["eventId"] for e in got) == sorted(e["eventId"] for e in want) and len(got) == 5
    assert len(client.events(PROJECT, "dev01", rfc3339(now - timedelta(days=1)), rfc3339(now), None)) == 20
    with pytest.raises(DTError, match="device ghost"):
        client.events(PROJECT, "ghost", rfc3339(now - timedelta(days=1)), rfc3339(now), None)


def test_connector_urls_must_be_https_except_loopback(dt_env, standin):
    client = Client()
    body = {"displayName": "x", "type": "HTTP_PUSH", "events": [], "labels": [],
            "httpConfig": {"url": "http://example.com/", "signatureSecret": "s", "headers": {}}}
    with pytest.raises(DTError, match="https"):
        client.call("POST", f"/projects/{PROJECT}/dataconnectors", body=body)
    standin.allow_http_loopback = False
    body["httpConfig"]["url"] = "http://127.0.0.1:9/"
    with pytest.raises(DTError, match="https"):
        client.call("POST", f"/projects/{PROJECT}/dataconnectors", body=body)


def test_dt_client_is_never_imported_by_core_entry_points_or_the_cli_parser():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, core, core.receiver, core.worker, dtconnector.cli as c, aws_lambda.handler; "
            "c.build_parser(load=c.BY_NAME); "
            "bad = [m for m in ('requests', 'urllib3') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
