"""Run `dtconnector serve` as a real subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.dt import SECRET

HANDLERS = textwrap.dedent(
    """
    import os, time
    from core import on

    @on("*")
    def record(event):
        delay = float(os.environ.get("E2E_HANDLER_DELAY_S", "0"))
        if delay:
            time.sleep(delay)
        gate = os.environ.get("E2E_GATE_FILE")
        while gate and not os.path.exists(gate):  # held until the test opens the gate
            time.sleep(0.01)
        if event.labels.get("fail") == "always":
            raise RuntimeError("this event always fails")
        with open(os.environ["E2E_SEEN_FILE"], "a") as f:
            f.write(event.event_id + "\\n")
    """
)


class Server:
    def __init__(self, workdir: Path, env: dict):
        self.workdir = workdir
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, timeout: float = 20.0, nofile: int | None = None) -> "Server":
        """`nofile`: the server's file-descriptor limit (``ulimit -n``), when given."""
        args = [sys.executable, "-m", "dtconnector", "serve", "--port", "0", "--db", str(self.workdir / "events.db")]
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.proc = subprocess.Popen(
            args, env=self.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, preexec_fn=limit
        )
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
                self.stderr = list(self.banner)
                threading.Thread(target=self._read_stderr, daemon=True).start()
                return self
        raise RuntimeError("dtconnector serve did not start in time")

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:  # everything after the banner: restarts, errors
            self.stderr.append(line)

    def children(self) -> dict[str, int]:
        """The pids of the web and worker processes `serve` started, by role."""
        pid = self.proc.pid
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        roles = {}
        for kid in kids:
            try:
                argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"local_receiver.serve" in argv:
                roles[argv[argv.index(b"local_receiver.serve") + 1].decode()] = int(kid)
        return roles

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(15)
        return self.proc.returncode if self.proc else 0

    def request(self, method: str, path: str = "/", body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, (json.loads(data) if data else None)
        finally:
            conn.close()

    def seen(self) -> list[str]:
        path = Path(self.env["E2E_SEEN_FILE"])
        return path.read_text().split() if path.exists() else []

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "dtconnector", *args, "--db", str(self.workdir / "events.db")],
            env=self.env, capture_output=True, text=True, check=True, timeout=30,
        ).stdout


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[Callable[..., Server]]:
    """Yields ``make(**env)``: a `Server` (not started) in `workdir` with the test
    handlers and `env` added to its environment. Kills whatever is still running on exit."""
    (workdir / "e2e_handlers.py").write_text(HANDLERS)
    repo = Path(__file__).resolve().parents[2]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DT_")},
        "PYTHONPATH": os.pathsep.join([str(workdir), str(repo)]),
        "DT_SIGNATURE_SECRET": SECRET,
        "DT_HANDLERS": "e2e_handlers",
        "DT_RETRY_DELAY_S": "0",
        "DT_MAX_ATTEMPTS": "3",
        "E2E_SEEN_FILE": str(workdir / "seen.txt"),
    }
    made: list[Server] = []

    def make(**extra_env) -> Server:
        server = Server(workdir, {**env, **extra_env})
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            if server.proc and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)


@pytest.fixture
def make_server(tmp_path):
    with servers(tmp_path) as make:
        yield make
