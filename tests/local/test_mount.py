"""The receiver mounted on a path in someone else's service: the examples themselves, run
with Starlette's TestClient (lifespan included), Flask's test client and Werkzeug's real
development server, on SQLite, with the handlers in a `dtconnector worker` process."""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.dt import SECRET, event_body, event_id_of, signed
from tests.http_probes import exchange, post_head, statuses

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REPO = EXAMPLES.parent


@pytest.fixture
def example_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples keep their database in ./.dtconnector/
    for name in ("DT_HANDLERS", "DT_SIGNATURE_MODE", "DT_ALLOW_UNSIGNED", "DT_METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DT_SIGNATURE_SECRET", SECRET)
    return tmp_path


@contextlib.contextmanager
def worker_process(workdir: Path):
    """`dtconnector worker --db .dtconnector/events.db`, as the examples say to run it."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DT_")},
           "PYTHONPATH": str(REPO), "DT_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "dtconnector", "worker", "--db", ".dtconnector/events.db"],
                            cwd=workdir, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("dtconnector: worker processing .dtconnector/events.db"), line
        yield proc
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        assert proc.stderr.read().splitlines()[-1] == "dtconnector: worker stopped"


def _until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_starlette_service_receives_events_under_its_mount_path(example_env):
    from starlette.testclient import TestClient

    module = runpy.run_path(str(EXAMPLES / "mount_starlette.py"))
    body = event_body(device="dev-mounted")
    with TestClient(module["app"]) as client, worker_process(example_env):
        assert client.get("/").text == "my service"
        assert client.post("/dt/", content=body, headers=signed(body)).status_code == 202
        assert client.post("/dt/", content=body, headers=signed(body)).json() == {
            "status": "duplicate", "eventId": event_id_of(body)}
        assert client.post("/dt/", content=body, headers={"X-Dt-Signature": "nope"}).status_code == 401
        # the device's state, not /healthz's count: re-read every 0.1 s, a 0 just after the
        # 202 can predate the event
        assert _until(lambda: module["dt"].state.get_device("dev-mounted"))
        assert _until(lambda: client.get("/dt/healthz").json() == {"status": "ok", "queued": 0, "deadLetters": 0})
        [state] = module["dt"].state.get_device("dev-mounted")
        assert state.event_id == event_id_of(body)


def test_flask_service_receives_events_under_its_mount_path(example_env):
    module = runpy.run_path(str(EXAMPLES / "mount_flask.py"))
    dt = module["dt"]
    try:
        client = module["app"].test_client()
        body = event_body(device="dev-flask")
        with worker_process(example_env):
            assert client.get("/").get_data(as_text=True) == "my service"
            assert client.post("/dt/", data=body, headers=signed(body)).status_code == 202
            assert client.post("/dt/", data=body, headers=signed(body)).status_code == 200
            assert client.post("/dt/", data=body, headers={"X-Dt-Signature": "nope"}).status_code == 401
            assert client.get("/dt/").status_code == 405
            assert _until(lambda: dt.state.get_device("dev-flask"))  # not /healthz's count: see above
            assert _until(lambda: client.get("/dt/healthz").get_json() == {"status": "ok", "queued": 0,
                                                                        "deadLetters": 0})
            [state] = dt.state.get_device("dev-flask")
            assert state.event_id == event_id_of(body)
    finally:
        dt.stop()


def test_the_flask_mount_under_werkzeugs_server_refuses_two_content_lengths(example_env):
    """Werkzeug's development server keeps only the last Content-Length in environ; the
    WSGI app still refuses the request (400, closed), and nothing is stored."""
    from werkzeug.serving import make_server

    module = runpy.run_path(str(EXAMPLES / "mount_flask.py"))
    dt = module["dt"]
    server = make_server("127.0.0.1", 0, module["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        body = event_body(device="dev-smuggled")
        head = post_head({**signed(body), "Content-Length": "5", "content-length": str(len(body))})
        data, _ = exchange(port, head.replace(b"POST / ", b"POST /dt/ ") + body)
        assert statuses(data) == [400], data
        assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {"error": "bad_request",
                                                              "reason": "more than one Content-Length"}
        ok = post_head({**signed(body), "Content-Length": str(len(body))}).replace(b"POST / ", b"POST /dt/ ")
        data, _ = exchange(port, ok + body)
        assert statuses(data) == [202]  # the same event, framed once: accepted (nothing was stored before)
    finally:
        server.shutdown()
        dt.stop()
