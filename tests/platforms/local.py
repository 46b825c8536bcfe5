"""The local receiver on SQLite: no stand-in needed, SQLite is the real thing."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Mapping

from core.config import Settings
from core.http import Headers, Request
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


class LocalHarness(Harness):
    def __init__(self, db_path: Path, env: Mapping[str, str]):
        self._db_path = db_path
        self._settings = Settings.from_env(env, max_attempts=self.max_attempts)
        self._open()

    def _open(self) -> None:
        self.app = LocalApp(self._db_path, self._settings, retry_base_s=0.0)
        self.claim_store = self.app.claims
        self.state_store = self.app.state

    def restart(self) -> None:
        """`dtconnector serve` stopped and started again: the new process takes the file
        over and releases what the old one held (`LocalApp.take_ownership`)."""
        self.app.stop()
        self._open()
        self.app.take_ownership()

    def requeue_dead_letters(self) -> int:
        return self.app.queue.requeue_dead_letters()  # `dtconnector dead-letters --requeue`

    def new_container(self) -> None:
        """Nothing to forget: `dtconnector serve` reads its settings once, from its command
        line and environment, before it listens; no request reaches them."""

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        response = self.app.receiver.handle(Request(method, body, Headers(headers), path))
        return Reply(response.status, response.body, response.all_headers())

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

        return parse_prometheus(self.app.metrics.exposition())

    def sweep(self) -> None:
        from core.retention import sweep_until_done

        sweep_until_done(self.app.sweeper, self.app.db.clock())

    def start_cleanup(self):
        """The receiver's own `BackgroundSweeper`, with its production schedule."""
        sweeper = self.app.background_sweeper
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
