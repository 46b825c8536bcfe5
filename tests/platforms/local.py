"""The local receiver on SQLite: no stand-in needed, SQLite is the real thing.

Requests go through the ASGI app `dtconnector serve` runs (`LocalApp.asgi()`: framing
checks, admission on the event loop, the group-commit writer thread, the backlog bound),
called with the scope and messages uvicorn hands it; the worker side runs in this process
(`LocalApp.local_worker`) on the same file, as the worker process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Mapping

from core.config import Settings
from local_receiver.app import LocalApp

from .base import Harness, Reply, StandIn


class _FailingConnection:
    def __init__(self, real: sqlite3.Connection, table: str):
        self._real = real
        self._table = re.compile(rf"\b{table}\b")

    def execute(self, sql: str, params=()):
        if self._table.search(sql):
            raise sqlite3.OperationalError("disk I/O error")
        return self._real.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _header_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # what a client sending UTF-8 puts on the wire
        return text.encode("utf-8")


async def call_asgi(app, method: str, path: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request through an ASGI app, the way uvicorn presents it: header names
    lower-cased, the body in one message, then ``http.disconnect`` once answered. A
    client library adds ``Content-Length`` to a request with a body; so does this."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    raw = [(name.lower().encode("latin-1"), _header_bytes(value)) for name, value in pairs]
    names = {name for name, _ in raw}
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        if b"content-length" not in names and b"transfer-encoding" not in names:
            raw.append((b"content-length", str(len(body)).encode()))
    target, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method.upper(), "scheme": "http", "path": target, "raw_path": target.encode(),
        "query_string": query.encode(), "root_path": "", "headers": raw,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
    }
    answered = asyncio.Event()
    sent_body = False
    response: dict = {"status": None, "headers": {}, "body": b""}

    async def receive() -> dict:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
            response["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    return response["status"], response["headers"], response["body"]


class LocalHarness(Harness):
    def __init__(self, db_path: Path, env: Mapping[str, str]):
        self._db_path = db_path
        self._settings = Settings.from_env(env, max_attempts=self.max_attempts)
        self._open()

    def _open(self) -> None:
        self.app = LocalApp(self._db_path, self._settings, retry_base_s=0.0)
        self.asgi = self.app.asgi()
        self.claim_store = self.app.claims
        self.state_store = self.app.state

    def restart(self) -> None:
        """`dtconnector serve` stopped and started again: the new process takes the file
        over and releases what the old one held (`LocalApp.take_ownership`)."""
        self.app.stop()
        self._open()
        self.app.take_ownership()
        self.app.local_worker.take_ownership()  # the worker's crash recovery

    def requeue_dead_letters(self) -> int:
        return self.app.queue.requeue_dead_letters()  # `dtconnector dead-letters --requeue`

    def new_container(self) -> None:
        """Nothing to forget: `dtconnector serve` reads its settings once, from its command
        line and environment, before it listens; no request reaches them."""

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        status, answer_headers, answer = asyncio.run(call_asgi(self.asgi, method, path, headers, body))
        assert status is not None, "the app sent no answer"
        answer_headers.pop("content-length", None)
        answer_headers.pop("connection", None)
        answer_headers.pop("content-type", None)
        return Reply(status, answer.decode("utf-8"), {_canonical(k): v for k, v in answer_headers.items()})

    def drain(self) -> None:
        self.app.runner.drain()

    def inject_message(self, message: str) -> None:
        self.app.queue.enqueue(message, event_id=json.loads(message)["event"]["eventId"])

    def queue_depth(self) -> int:
        return self.app.queue.depth()

    def dead_letters(self) -> list[str]:
        return [d["eventId"] for d in self.app.queue.dead_letters()]

    @contextlib.contextmanager
    def broken(self, part: str):
        # SQLite cannot be "unreachable"; the nearest real failure is the driver raising
        # OperationalError (disk I/O error) on statements touching that part's table.
        table = {"claims": "claims", "queue": "queue", "state": "device_state"}[part]
        db = self.app.db
        real = db._conn
        db._conn = _FailingConnection(real, table)
        try:
            yield
        finally:
            db._conn = real

    def metrics(self):
        from tests.metrics_native import parse_prometheus

        return parse_prometheus(self.app.metrics_text())

    def sweep(self) -> None:
        from core.retention import sweep_until_done

        sweep_until_done(self.app.local_worker.sweeper, self.app.db.clock())

    def start_cleanup(self):
        """The receiver's own `BackgroundSweeper`, with its production schedule."""
        sweeper = self.app.local_worker.background_sweeper
        sweeper.start()
        return sweeper.stop

    def stored_records(self) -> dict[str, int]:
        counts = self.app.db.query(
            "SELECT (SELECT count(*) FROM claims) + (SELECT count(*) FROM queue)"
            " + (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM device_state)"
        )[0]
        return {"events": counts[0], "state": counts[1]}

    def close(self) -> None:
        self.app.stop()


def _canonical(name: str) -> str:
    """``retry-after`` -> ``Retry-After``: how `core.http.Response.all_headers` names them."""
    return "-".join(part.capitalize() for part in name.split("-"))


class LocalStandIn(StandIn):
    name = "local"

    def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dtconnector-local-")
        self._n = 0

    def stop(self) -> None:
        self._dir.cleanup()

    def harness(self, env: Mapping[str, str]) -> Harness:
        self._n += 1
        return LocalHarness(Path(self._dir.name) / f"test{self._n}.db", env)


STAND_IN = LocalStandIn()
