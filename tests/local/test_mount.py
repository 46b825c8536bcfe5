"""The receiver mounted on a path in someone else's service: the examples themselves, run
with Starlette's TestClient (lifespan included) and Flask's test client, on SQLite."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest

from tests.dt import SECRET, event_body, event_id_of, signed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def example_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples keep their database in ./.dtconnector/
    for name in ("DT_HANDLERS", "DT_SIGNATURE_MODE", "DT_ALLOW_UNSIGNED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DT_SIGNATURE_SECRET", SECRET)


def _drained(dt, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dt.queue.depth() == 0:
            return True
        time.sleep(0.05)
    return False


def test_starlette_service_receives_events_under_its_mount_path(example_env):
    from starlette.testclient import TestClient

    module = runpy.run_path(str(EXAMPLES / "mount_starlette.py"))
    body = event_body(device="dev-mounted")
    with TestClient(module["app"]) as client:
        assert client.get("/").text == "my service"
        assert client.post("/dt/", content=body, headers=signed(body)).status_code == 202
        assert client.post("/dt/", content=body, headers=signed(body)).json() == {
            "status": "duplicate", "eventId": event_id_of(body)}
        assert client.post("/dt/", content=body, headers={"X-Dt-Signature": "nope"}).status_code == 401
        assert _drained(module["dt"])
        assert client.get("/dt/healthz").json() == {"status": "ok", "queued": 0, "deadLetters": 0}
        [state] = module["dt"].state.get_device("dev-mounted")
        assert state.event_id == event_id_of(body)


def test_flask_service_receives_events_under_its_mount_path(example_env):
    module = runpy.run_path(str(EXAMPLES / "mount_flask.py"))
    dt = module["dt"]
    try:
        client = module["app"].test_client()
        body = event_body(device="dev-flask")
        assert client.get("/").get_data(as_text=True) == "my service"
        assert client.post("/dt/", data=body, headers=signed(body)).status_code == 202
        assert client.post("/dt/", data=body, headers=signed(body)).status_code == 200
        assert client.post("/dt/", data=body, headers={"X-Dt-Signature": "nope"}).status_code == 401
        assert client.get("/dt/").status_code == 405
        assert _drained(dt)
        assert client.get("/dt/healthz").get_json() == {"status": "ok", "queued": 0, "deadLetters": 0}
    finally:
        dt.stop()
