"""Helpers for the emulator's end-to-end tests: a real `dtconnector serve` subprocess and a
tiny scriptable HTTP server in a thread. Every port is a free loopback port."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from emulator.httpserver import QuietThreadingHTTPServer
from tests.dt import SECRET

REPO = Path(__file__).resolve().parents[2]

# Appends each handled event id to a file, one line per call, from the receiver process.
# With E2E_PAUSE_AFTER=N, the N-th call first creates E2E_PAUSE_MARKER and sleeps, so a
# test can SIGKILL the process at a known point: mid-handler, before the append.
HANDLERS = textwrap.dedent(
    """
    import os, time
    from core import on

    calls = 0

    @on("*")
    def record(event):
        global calls
        calls += 1
        marker = os.environ.get("E2E_PAUSE_MARKER")
        if marker and calls == int(os.environ.get("E2E_PAUSE_AFTER", "0")) and not os.path.exists(marker):
            open(marker, "w").write(event.event_id)
            time.sleep(120)
        with open(os.environ["E2E_SEEN_FILE"], "a") as f:
            f.write(event.event_id + "\\n")
    """
)


class Serve:
    """`dtconnector serve` on a free port (or a given one, to restart in place)."""

    def __init__(self, workdir: Path, env: dict):
        self.workdir = workdir
        self.env = env
        self.db = workdir / "events.db"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.banner: list[str] = []

    def start(self, port: int = 0, *extra: str, timeout: float = 20.0) -> "Serve":
        args = [sys.executable, "-m", "dtconnector", "serve", "--port", str(port), "--db", str(self.db), *extra]
        self.proc = subprocess.Popen(args, env=self.env, cwd=self.workdir, stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        self.banner = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"dtconnector serve exited: {self.proc.wait()} {''.join(self.banner)}")
            self.banner.append(line)
            m = re.search(r"receiving DT events at http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                # the rest of the banner (notes) follows at once
                threading.Thread(target=self._drain_stderr, daemon=True).start()
                return self
        raise RuntimeError("dtconnector serve did not start in time")

    def _drain_stderr(self) -> None:
        proc = self.proc
        for line in proc.stderr:
            self.banner.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def health(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(15)
        return self.proc.returncode if self.proc else 0

    def seen(self) -> list[str]:
        path = Path(self.env["E2E_SEEN_FILE"])
        return path.read_text().split() if path.exists() else []

    def state(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "dtconnector", "state", "--db", str(self.db)],
            env=self.env, cwd=self.workdir, capture_output=True, text=True, check=True, timeout=30,
        )
        return json.loads(out.stdout)


@pytest.fixture
def make_serve(tmp_path):
    (tmp_path / "e2e_record_handlers.py").write_text(HANDLERS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DT_")},
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "DT_SIGNATURE_SECRET": SECRET,
        "DT_HANDLERS": "e2e_record_handlers",
        "DT_RETRY_DELAY_S": "0",
        "DT_LOG_LEVEL": "WARNING",
        "E2E_SEEN_FILE": str(tmp_path / "seen.txt"),
    }
    made: list[Serve] = []

    def make(**extra_env) -> Serve:
        serve = Serve(tmp_path, {**env, **extra_env})
        made.append(serve)
        return serve

    yield make
    for serve in made:
        if serve.proc and serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(10)


class Scripted:
    """A tiny receiver in a thread. `behave(attempt_no, body, headers)` returns a status
    code, or ("sleep", seconds, status) to answer late. Records every request."""

    def __init__(self, behave):
        self.behave = behave
        self.requests: list[tuple[bytes, dict]] = []
        self.attempts: dict[bytes, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.requests.append((body, headers))
                    n = outer.attempts[body] = outer.attempts.get(body, 0) + 1
                action = outer.behave(n, body, headers)
                if isinstance(action, tuple):
                    time.sleep(action[1])
                    action = action[2]
                payload = b'{"ok":true}'
                try:
                    self.send_response(action)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout) and closed
                    pass

            def log_message(self, *args):
                pass

        self.server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"

    def __enter__(self) -> "Scripted":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    made = []

    def make(behave) -> Scripted:
        s = Scripted(behave).__enter__()
        made.append(s)
        return s

    yield make
    for s in made:
        s.__exit__()


@pytest.fixture
def secret() -> str:
    return SECRET
