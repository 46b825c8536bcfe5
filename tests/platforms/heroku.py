"""Heroku on a real redis-server: `heroku.asgi.app`, the app the Procfile's web process
serves, on the same uvicorn server and `core.serving.GuardedProtocol` (`core.serving.server`),
reached over real HTTP; the worker's burst mode in-process; Redis for claims, queue and state.

Why in-process rather than the Procfile's subprocess: every contract scenario then runs the
production code path (HTTP parsing and limits, the ASGI app, the asyncio Redis client and
its one-script ingest, the l2met recorder) while the harness can still do what a subprocess
would not allow cheaply: swap a Redis client for a dead one (`broken`), forget the built
objects (`new_container`) and read the recorder's lines. One server thread serves the whole
session; each harness resets the runtime, so the next request builds the app from the
harness's environment. The Procfile's own processes are started by tests/heroku
(test_processes.py, test_web_dyno_hostile.py).

One redis-server per session on a free loopback port, without persistence; each harness
gets its own key prefix (deleted when the harness closes). `broken(part)` points that
part's Redis client at a loopback port nobody listens on, so redis-py raises its own
ConnectionError, as with a dead server, and the adapter has to translate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from typing import Mapping

import pytest

from core.logs import log as core_log

from .base import Harness, Reply, StandIn, free_port


class RedisServer:
    """A redis-server process shared by whoever needs it in this session (ref-counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def acquire(self) -> str:
        with self._lock:
            if self.proc is None:
                self._start()
            self._users += 1
            return self.url

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users <= 0 and self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
                self.proc = None
                self._users = 0

    def _start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip(
                "redis-server is not installed (apt-get install -y redis-server, or run "
                "scripts/test-deps.sh as root): the Heroku stand-in cannot start"
            )
        port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace")[-500:]
                    self.proc = None
                    pytest.skip(f"redis-server exited at start: {err}")
                if time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc = None
                    pytest.skip("redis-server did not answer within 15 s")
                time.sleep(0.05)
        client.close()


SERVER = RedisServer()


class WebServer:
    """`heroku.asgi.app` on `core.serving.server` (uvicorn, GuardedProtocol, uvloop) on a
    thread of this process, for the whole session: started on first use, stopped at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self.died: set[str] = set()  # ids of requests during which the "process" died

    def ensure(self) -> int:
        with self._lock:
            if self._thread is None:
                self._start()
            return self.port

    def _start(self) -> None:
        import atexit

        from core.serving import Limits, bind, run, server
        from heroku.asgi import app

        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self._server = server(_CrashAware(app, self.died), Limits())

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[sock])

        self._thread = threading.Thread(target=run, args=(main(),), name="heroku-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process web server did not start")
            time.sleep(0.01)
        atexit.register(self.stop)

    def call(self, coroutine, timeout: float = 10.0):
        """Run `coroutine` on the server's event loop (where the runtime's asyncio client
        and ingest live) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._thread = None


class _CrashAware:
    """Passes every request to the app untouched. A crash the reliability suite models
    in-process (`reliability.inproc.ProcessDied`, raised by a fault it injected) is noted
    under the request's ``X-Harness-Request`` id, so `deliver` raises it as the client of a
    killed web process would see it: no answer (uvicorn itself would answer 500)."""

    def __init__(self, app, died: set[str]):
        self.app = app
        self.died = died

    async def __call__(self, scope, receive, send) -> None:
        from reliability.inproc import ProcessDied

        try:
            await self.app(scope, receive, send)
        except ProcessDied:
            self.died.add(dict(scope.get("headers") or ()).get(HARNESS_REQUEST, b"").decode())
            raise


HARNESS_REQUEST = b"x-harness-request"
WEB = WebServer()


def http_request(port: int, method: str, path: str, body: bytes, headers: list[tuple[str, str]]):
    """One request on a fresh connection (every 4xx closes its connection anyway), the
    headers sent exactly as given (duplicates too), a Content-Length added unless framed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "dt.example")
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            conn.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            if not names & {"content-length", "transfer-encoding"}:
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8"), dict(response.getheaders())
    finally:
        conn.close()


_ENV_PREFIXES = ("DT_", "REDIS_")


def apply_env(env: Mapping[str, str]) -> dict[str, str]:
    """Make os.environ's DT_*/REDIS_* variables exactly `env`; returns what was there."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    return saved


def restore_env(saved: Mapping[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(_ENV_PREFIXES)]:
        del os.environ[key]
    os.environ.update(saved)


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


class HerokuHarness(Harness):
    def __init__(self, url: str, env: Mapping[str, str]):
        from heroku import runtime

        self.url = url
        self.prefix = f"t-{uuid.uuid4().hex[:10]}:"
        self.env = {"DT_MAX_ATTEMPTS": str(self.max_attempts), "DT_RETRY_DELAY_S": "0", **env,
                    "REDIS_URL": url, "DT_REDIS_PREFIX": self.prefix}
        self._saved = apply_env(self.env)
        # The entry points call core.logs.configure(), which gives the `dtconnector` logger a
        # stdout handler and stops propagation: undo that at close for the rest of the session.
        self._log_state = (list(core_log.handlers), core_log.propagate, core_log.level)
        self._runtime = runtime
        runtime.reset()
        from heroku.metrics import RECORDER

        self.stdout = io.StringIO()  # what Logplex would carry to a metrics add-on
        RECORDER.stream = self.stdout
        self.port = WEB.ensure()
        self._dead_port_socket: socket.socket | None = None

    @property
    def claim_store(self):
        return self._runtime.claim_store()

    @property
    def state_store(self):
        return self._runtime.state_store()

    @property
    def queue(self):
        return self._runtime.queue()

    def new_container(self) -> None:
        self._runtime.reset()

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        from reliability.inproc import ProcessDied

        request_id = uuid.uuid4().hex
        header_list = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        header_list.append((HARNESS_REQUEST.decode(), request_id))
        status, text, response_headers = http_request(self.port, method, path, body, header_list)
        if request_id in WEB.died:
            raise ProcessDied("the web process died while handling this request")
        return Reply(status, text, response_headers)

    def drain(self) -> None:
        from heroku.worker import QueueWorker

        QueueWorker.from_env().run(burst=True)

    def inject_message(self, message: str) -> None:
        import json

        self.queue.enqueue(message, event_id=json.loads(message)["event"]["eventId"])

    def queue_depth(self) -> int:
        return self.queue.depth()

    def dead_letters(self) -> list[str]:
        return [d["eventId"] for d in self.queue.dead_letters()]

    def requeue_dead_letters(self) -> int:
        return self.queue.requeue_dead_letters()  # `python -m heroku.worker --requeue-dead-letters`

    # Redis expires claims itself, in its own (real) time: the suite checks the expiries.
    ttl_never_fires = True

    def record_expiries(self) -> list[float]:
        client = self._runtime.redis()
        expiries = [client.pexpiretime(key) for key in client.scan_iter(match=self.prefix + "c:*", count=1000)]
        assert all(ms > 0 for ms in expiries), expiries  # -1: a claim written without an expiry
        return [ms / 1000 for ms in expiries]

    def native_expiry(self, key: str) -> float | None:
        """Redis expires claims itself (PXAT, `heroku.stores`): when, as written."""
        ms = self._runtime.redis().pexpiretime(self.prefix + "c:" + key)
        return None if ms < 0 else ms / 1000

    def metrics(self):
        from tests.metrics_native import parse_l2met

        return parse_l2met(self.stdout.getvalue().splitlines())

    def stored_records(self) -> dict[str, int]:
        from heroku.report import store_report

        counts = store_report(self._runtime.redis(), self.prefix).counts
        return {"events": counts["claims"] + counts["ledger"] + counts["dead_letters"], "state": counts["device_state"]}

    def _dead_port(self) -> int:
        if self._dead_port_socket is None:
            # Bound but never listening: connecting is refused, and no one else gets the port.
            self._dead_port_socket = socket.socket()
            self._dead_port_socket.bind(("127.0.0.1", 0))
        return self._dead_port_socket.getsockname()[1]

    def dead_client(self):
        """A client built like the real one, for a loopback port where nothing listens."""
        from heroku.connection import connect

        return connect(f"redis://127.0.0.1:{self._dead_port()}/0")

    @contextlib.contextmanager
    def broken(self, part: str):
        """claims, queue: the web's one script writes both, so its asyncio client goes dead
        too (the synchronous adapter's as well, for the tests of the port itself); state:
        the worker's store."""
        adapter = {"claims": self.claim_store, "queue": self.queue, "state": self.state_store}[part]
        real, dead = adapter.client, self.dead_client()
        adapter.client = dead
        try:
            with self._web_client_dead() if part in ("claims", "queue") else contextlib.nullcontext():
                yield
        finally:
            adapter.client = real
            dead.close()

    @contextlib.contextmanager
    def _web_client_dead(self):
        """The web ingest's asyncio client points at the dead port (swapped on its loop)."""
        from heroku.connection import connect_async

        url = f"redis://127.0.0.1:{self._dead_port()}/0"

        async def swap(client):
            ingest = self._runtime.ingest()  # built now if no request built it yet
            previous, ingest.client = ingest.client, client or connect_async(url)
            return previous

        real = WEB.call(swap(None))
        try:
            yield
        finally:
            WEB.call(WEB.call(swap(real)).aclose())

    def close(self) -> None:
        try:
            delete_prefix(self.url, self.prefix)
        finally:
            self._runtime.reset()
            from heroku.metrics import RECORDER

            if RECORDER.stream is self.stdout:
                RECORDER.stream = None
            restore_env(self._saved)
            core_log.handlers[:], core_log.propagate, level = self._log_state
            core_log.setLevel(level)
            if self._dead_port_socket is not None:
                self._dead_port_socket.close()


class HerokuStandIn(StandIn):
    name = "heroku"

    def start(self) -> None:
        self.url = SERVER.acquire()

    def stop(self) -> None:
        SERVER.release()

    def harness(self, env: Mapping[str, str]) -> Harness:
        return HerokuHarness(self.url, env)


STAND_IN = HerokuStandIn()
