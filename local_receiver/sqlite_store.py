"""Core's ports on one SQLite file: the embedded default that needs no server.

WAL mode with ``synchronous=NORMAL``: a commit survives the process being killed (the
guarantee DT's 2xx needs here), though not a power cut of the machine. One connection
per `Database`, guarded by a lock, because SQLite has one writer at a time anyway and
the statements are tiny.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from core.ports import IN_PROGRESS, Claim, DeviceState, QueueError, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    key        TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    version    TEXT NOT NULL,
    done       TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (visible_at, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id         INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    error      TEXT,
    dead_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_state (
    device_id  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    version    INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    data       TEXT NOT NULL,
    labels     TEXT NOT NULL,
    PRIMARY KEY (device_id, event_type)
);
"""


class Database:
    """One SQLite file holding claims, the queue, dead letters and device state."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self.clock = clock
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database: {exc}") from exc
        self.changed = threading.Condition()

    def run(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite failed: {exc}") from exc

    def transaction(self) -> "_Transaction":
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` holding the connection lock throughout."""

    def __init__(self, db: Database):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db._lock.acquire()
        try:
            self.db._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.db._lock.release()
            raise StoreError(f"SQLite failed: {exc}") from exc
        return self.db._conn

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.db._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.Error as err:
            if exc_type is None:
                raise StoreError(f"SQLite commit failed: {err}") from err
        finally:
            self.db._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"SQLite failed: {exc}") from exc
        return False


class SQLiteClaimStore:
    def __init__(self, db: Database):
        self._db = db

    def create(self, key: str, claim: Claim) -> bool:
        cur = self._db.run(
            "INSERT INTO claims (key, status, expires_at, version, done) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (key) DO NOTHING",
            (key, claim.status, claim.expires_at, claim.version, json.dumps(claim.done)),
        )
        return cur.rowcount == 1

    def get(self, key: str) -> Claim | None:
        row = self._db.run(
            "SELECT status, expires_at, version, done FROM claims WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return Claim(row[0], row[1], row[2], tuple(json.loads(row[3])))

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        cur = self._db.run(
            "UPDATE claims SET status = ?, expires_at = ?, version = ?, done = ? WHERE key = ? AND version = ?",
            (claim.status, claim.expires_at, claim.version, json.dumps(claim.done), key, expected_version),
        )
        return cur.rowcount == 1

    def delete(self, key: str, expected_version: str) -> bool:
        cur = self._db.run("DELETE FROM claims WHERE key = ? AND version = ?", (key, expected_version))
        return cur.rowcount == 1

    def expire_in_progress(self) -> int:
        """After a restart nobody holds a claim any more: let retries take over now."""
        cur = self._db.run(
            "UPDATE claims SET expires_at = ? WHERE status = ? AND expires_at > ?",
            (self._db.clock(), IN_PROGRESS, self._db.clock()),
        )
        return cur.rowcount


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    event_id: str
    body: str
    attempts: int  # including this delivery


class SQLiteQueue:
    """A durable queue with visibility timeouts, like SQS: a reserved message reappears
    after its lease unless acknowledged, so a worker killed mid-handler loses nothing."""

    def __init__(self, db: Database):
        self._db = db

    @property
    def changed(self) -> threading.Condition:
        """Notified on every enqueue, so an idle worker wakes at once."""
        return self._db.changed

    def enqueue(self, message: str, *, event_id: str) -> None:
        try:
            self._db.run(
                "INSERT INTO queue (event_id, body, visible_at) VALUES (?, ?, ?)",
                (event_id, message, self._db.clock()),
            )
        except StoreError as exc:
            raise QueueError(str(exc)) from exc
        with self._db.changed:
            self._db.changed.notify_all()

    def reserve(self, lease_s: float) -> QueuedMessage | None:
        now = self._db.clock()
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id, event_id, body, attempts FROM queue WHERE visible_at <= ? ORDER BY visible_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE queue SET visible_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now + lease_s, row[0]),
            )
        return QueuedMessage(row[0], row[1], row[2], row[3] + 1)

    def ack(self, message: QueuedMessage) -> None:
        self._db.run("DELETE FROM queue WHERE id = ?", (message.id,))

    def retry_later(self, message: QueuedMessage, delay_s: float, error: str) -> None:
        self._db.run(
            "UPDATE queue SET visible_at = ?, last_error = ? WHERE id = ?",
            (self._db.clock() + delay_s, error, message.id),
        )

    def dead_letter(self, message: QueuedMessage, error: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO dead_letters (id, event_id, body, attempts, error, dead_at) VALUES (?, ?, ?, ?, ?, ?)",
                (message.id, message.event_id, message.body, message.attempts, error, self._db.clock()),
            )
            conn.execute("DELETE FROM queue WHERE id = ?", (message.id,))

    def make_all_visible(self) -> int:
        """After a restart, messages reserved by the dead process are free at once."""
        now = self._db.clock()
        return self._db.run("UPDATE queue SET visible_at = ? WHERE visible_at > ?", (now, now)).rowcount

    def depth(self) -> int:
        return self._db.run("SELECT count(*) FROM queue").fetchone()[0]

    def dead_letters(self) -> list[dict]:
        rows = self._db.run("SELECT event_id, attempts, error, dead_at, body FROM dead_letters ORDER BY dead_at").fetchall()
        return [dict(eventId=r[0], attempts=r[1], error=r[2], deadAt=r[3], body=r[4]) for r in rows]

    def requeue_dead_letters(self) -> int:
        """Move every dead letter back onto the queue (after the handler was fixed)."""
        with self._db.transaction() as conn:
            n = conn.execute(
                "INSERT INTO queue (event_id, body, visible_at) SELECT event_id, body, ? FROM dead_letters",
                (self._db.clock(),),
            ).rowcount
            conn.execute("DELETE FROM dead_letters")
        return n


class SQLiteStateStore:
    def __init__(self, db: Database):
        self._db = db

    def put_if_newer(self, state: DeviceState) -> bool:
        cur = self._db.run(
            "INSERT INTO device_state (device_id, event_type, version, event_id, timestamp, data, labels)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (device_id, event_type) DO UPDATE SET"
            "   version = excluded.version, event_id = excluded.event_id, timestamp = excluded.timestamp,"
            "   data = excluded.data, labels = excluded.labels"
            " WHERE excluded.version > device_state.version",
            (
                state.device_id,
                state.event_type,
                state.version,
                state.event_id,
                state.timestamp,
                json.dumps(state.data),
                json.dumps(state.labels),
            ),
        )
        return cur.rowcount == 1

    def get_device(self, device_id: str) -> list[DeviceState]:
        return list(self._select("WHERE device_id = ?", (device_id,)))

    def all(self) -> list[DeviceState]:
        return list(self._select("", ()))

    def _select(self, where: str, params: tuple) -> Iterator[DeviceState]:
        rows = self._db.run(
            "SELECT device_id, event_type, version, event_id, timestamp, data, labels FROM device_state "
            + where
            + " ORDER BY device_id, event_type",
            params,
        ).fetchall()
        for r in rows:
            yield DeviceState(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]))
