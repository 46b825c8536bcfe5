"""Core's ports on one SQLite file: the embedded default that needs no server.

WAL mode with ``synchronous=NORMAL`` by default: a commit survives the process being
killed (the guarantee DT's 2xx needs here), though not a power cut of the machine;
``DT_SQLITE_SYNCHRONOUS=FULL`` makes every commit survive that too (an fsync per commit).
One connection per `Database`, guarded by a lock, because SQLite has one writer at a
time anyway and the statements are tiny. Commits are grouped (see `Database`): a commit
costs far more than a statement, so ingest commits once per batch of concurrent events.

Two processes share the file (`dtconnector serve`'s web and worker processes): neither
ever holds the write lock while waiting for anything but SQLite (a user's handler, a
request). Their write transactions take turns on an ``flock`` of ``<db>.write-lock``
first (`Database._begin`): a writer waiting for the other sleeps in the kernel and wakes
the moment the other commits, where SQLite's own busy handler would poll with sleeps of
1, 2, 5, 10 ... ms. A writer that does not take it (another tool on the file) is met
with short retries instead.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    id         INTEGER PRIMARY KEY,  -- no AUTOINCREMENT: one page fewer written per enqueue
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
DROP INDEX IF EXISTS claims_expiry;  -- replaced by claims_removable
CREATE INDEX IF NOT EXISTS claims_removable ON claims (status, expires_at);  -- the sweeper's range scans
-- Row counts kept by triggers, so /healthz, the backlog bound and the backlog gauge read
-- one row instead of counting (or loading) a table that grows when handlers fail.
CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS queue_added AFTER INSERT ON queue
    BEGIN UPDATE counts SET n = n + 1 WHERE name = 'queue'; END;
CREATE TRIGGER IF NOT EXISTS queue_removed AFTER DELETE ON queue
    BEGIN UPDATE counts SET n = n - 1 WHERE name = 'queue'; END;
CREATE TRIGGER IF NOT EXISTS dead_letter_added AFTER INSERT ON dead_letters
    BEGIN UPDATE counts SET n = n + 1 WHERE name = 'dead_letters'; END;
CREATE TRIGGER IF NOT EXISTS dead_letter_removed AFTER DELETE ON dead_letters
    BEGIN UPDATE counts SET n = n - 1 WHERE name = 'dead_letters'; END;
-- A database made before the counts existed starts from a real count, once.
INSERT OR IGNORE INTO counts (name, n) SELECT 'queue', count(*) FROM queue;
INSERT OR IGNORE INTO counts (name, n) SELECT 'dead_letters', count(*) FROM dead_letters;
-- The worker process's metrics (a `PrometheusRecorder` snapshot), read by the web
-- process's GET /metrics: one row per process role, written with the worker's commits.
CREATE TABLE IF NOT EXISTS metrics (process TEXT PRIMARY KEY, snapshot TEXT NOT NULL) WITHOUT ROWID;
"""

#: ``DT_SQLITE_SYNCHRONOUS``: NORMAL (default: a commit survives the process dying, not a
#: power cut) or FULL (an fsync per commit: survives a power cut too).
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
#: How long a writer waits for another process's write lock before giving up (503).
LOCK_WAIT_S = 10.0
#: Prepared statements kept per connection (Python's default is 128).
STATEMENT_CACHE = 1024
#: Past this size the checkpointer makes the WAL start over (pausing every writer for the
#: frames not yet copied, and an fsync); below it, checkpoints never pause anyone.
WAL_RESTART_BYTES = 32 * 1024 * 1024


def synchronous_setting(env=None) -> str:
    """``DT_SQLITE_SYNCHRONOUS``, checked (a `ConfigError` names the variable)."""
    from core.config import ConfigError

    raw = (os.environ if env is None else env).get("DT_SQLITE_SYNCHRONOUS", "").strip().upper() or "NORMAL"
    if raw not in SYNCHRONOUS_MODES:
        raise ConfigError("DT_SQLITE_SYNCHRONOUS must be NORMAL or FULL")
    return raw


class Database:
    """One SQLite file holding claims, the queue, dead letters and device state.

    Group commit: writes run inside one open transaction shared by every thread. A
    *durable* write (an enqueue, a finished handler in the worker's ledger) commits it
    before returning, which also commits the non-durable writes made before it (claim
    bookkeeping, queue reservations and acks, device state); a background flusher commits
    whatever is left within `flush_delay_s`. Losing a non-durable write in a crash is
    harmless by design: an ingest claim expires after its short lease and the worker's
    ledger absorbs the second copy; a reservation or ack lost means one more delivery,
    whose finished handlers the ledger skips. WAL checkpoints (which fsync) run on the
    flusher's own connection, off the request path.
    """

    def __init__(
        self,
        path: str | Path,
        clock: Callable[[], float] = time.time,
        flush_delay_s: float = 0.0,
        synchronous: str = "NORMAL",
    ):
        self.path = str(path)
        self.clock = clock
        self.flush_delay_s = flush_delay_s
        self.synchronous = synchronous
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._batch_depth = 0  # > 0 inside `batch()`: commits wait for its end
        self._open = False  # a write transaction of ours is open (SQLite may end it: `_check_open`)
        self._rolled_back = False  # this batch's transaction was rolled back by SQLite
        self._after_commit: list[Callable[[], None]] = []
        self.wal_restart_bytes = WAL_RESTART_BYTES
        self._write_lock = None if self.path == ":memory:" else os.open(self.path + ".write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._write_locked = False
        try:
            # A batch's multi-row statements differ by row count (one SQL text per count, for
            # each of five statements): room for all of them in the prepared-statement cache.
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_S,
                                         cached_statements=STATEMENT_CACHE)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            # One transaction: two processes may open a new file at once.
            self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            # Our own short retries (`_begin`), not SQLite's busy handler, which sleeps
            # 1, 2, 5, 10 ... ms: far longer than another process holds the lock.
            self._conn.execute("PRAGMA busy_timeout=0")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the flusher checkpoints
                self._conn.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")  # after a burst
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database: {exc}") from exc
        self.changed = threading.Condition()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._committed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="dtconnector-sqlite-flush", daemon=True)
        self._flusher.start()

    # -- statements -------------------------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of a SELECT (seeing this process's uncommitted writes)."""
        with self._lock:
            try:
                return _retry_busy(lambda: self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                self._check_open()
                raise StoreError(f"SQLite failed: {exc}") from exc

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside is one transaction, committed once at the end (the writes
        that are durable on return outside a batch are durable when it ends): a group
        commit. What was written is committed even when an exception escapes (as the
        writes outside a batch are, by the flusher); a failed commit raises `StoreError`,
        and so does a batch whose transaction SQLite rolled back midway (a full disk, an I/O
        error): its earlier writes are gone, so none of it may be reported as stored."""
        with self._lock:
            if self._batch_depth == 0:
                self._rolled_back = False
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    self._commit()
                    if self._rolled_back:
                        self._rolled_back = False
                        raise StoreError("SQLite rolled the batch's transaction back: its earlier writes are not stored")

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once what this connection wrote so far is committed (at once
        when nothing is pending): another process must not be told before it can see."""
        with self._lock:
            if self._conn.in_transaction:
                if callback not in self._after_commit:
                    self._after_commit.append(callback)
                return
        callback()

    def _begin(self) -> None:
        """Open the write transaction (caller holds the lock), the other process's turn first."""
        self._take_turn()
        try:
            _retry_busy(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        except BaseException:
            self._end_turn()
            raise
        self._open = True

    def _check_open(self, *, earlier_writes: bool = True) -> None:
        """After a failed statement or a rollback (caller holds the lock). On some errors (a
        full disk, an I/O error, a trigger's RAISE(ROLLBACK)) SQLite rolls back the whole
        transaction, not only the statement. Once it is closed, give the write turn back
        (no commit will), and if it held `earlier_writes` (writes made before the failing
        statement or savepoint, now gone), mark the batch it belonged to as failed."""
        if self._open and not self._conn.in_transaction:
            self._open = False
            self._end_turn()
            if earlier_writes and self._batch_depth:
                self._rolled_back = True

    def _take_turn(self) -> None:
        if self._write_lock is not None and not self._write_locked:
            fcntl.flock(self._write_lock, fcntl.LOCK_EX)  # releases the GIL while it waits
            self._write_locked = True

    def _end_turn(self) -> None:
        if self._write_locked:
            self._write_locked = False
            fcntl.flock(self._write_lock, fcntl.LOCK_UN)

    def write(self, sql: str, params: tuple = (), *, durable: bool = True) -> int:
        """Run one write; returns the number of rows changed. `durable`: committed on return."""
        return self._write(sql, params, durable).rowcount

    def write_returning(self, sql: str, params: tuple = (), *, durable: bool = True) -> list[tuple]:
        """Run one write with a RETURNING clause; returns its rows."""
        return self._write(sql, params, durable, returning=True)

    def _write(self, sql: str, params: tuple, durable: bool, returning: bool = False):
        with self._lock:
            began = not self._conn.in_transaction
            try:
                if began:
                    self._begin()
                cursor = self._conn.execute(sql, params)
                result = cursor.fetchall() if returning else cursor  # RETURNING rows before commit
            except sqlite3.Error as exc:
                self._check_open(earlier_writes=not began)
                raise StoreError(f"SQLite failed: {exc}") from exc
            if durable:
                self._commit()
            elif not self._batch_depth and not self._dirty.is_set():  # a batch commits itself
                self._dirty.set()
            return result

    def transaction(self, durable: bool = True) -> "_Transaction":
        return _Transaction(self, durable)

    def _commit(self) -> None:
        """Commit the shared transaction (caller holds the lock); inside `batch`, at its end."""
        if self._batch_depth:
            return
        if not self._conn.in_transaction:
            self._check_open()
            return
        hooks, self._after_commit = self._after_commit, []
        try:
            self._conn.execute("COMMIT")
            self._committed = True  # the flusher checkpoints the WAL soon
        except sqlite3.Error as exc:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"SQLite commit failed: {exc}") from exc
        finally:
            if not self._conn.in_transaction:
                self._open = False
                self._end_turn()
        for hook in hooks:
            try:
                hook()
            except Exception:  # a notification, never a reason to fail the commit
                pass

    def flush(self) -> None:
        with self._lock:
            self._commit()

    # -- background commits and checkpoints -------------------------------------------

    def _flush_loop(self) -> None:
        ckpt = None
        last_ckpt = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._dirty.wait(0.5) and not self._stop.is_set():
                    self._stop.wait(self.flush_delay_s)  # let a few more writes join the commit
                    self._dirty.clear()
                    try:
                        self.flush()
                    except StoreError:
                        pass  # the next durable write reports it
                if self._committed and self.path != ":memory:" and time.monotonic() - last_ckpt >= 1.0:
                    if ckpt is None:
                        ckpt = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1)
                    self._checkpoint(ckpt)
                    last_ckpt = time.monotonic()
                    self._committed = False
        finally:
            if ckpt is not None:
                ckpt.close()

    def _checkpoint(self, ckpt: sqlite3.Connection) -> None:
        """Copy the WAL into the database file, and let the next write start the WAL over.

        SQLite restarts the WAL only when a checkpoint has copied every frame in it; under
        steady load, frames are appended while a checkpoint runs, so that never happens
        and the WAL grows without bound (300 MB for 20,000 events, each commit slower than
        the last). So: copy the bulk without blocking anyone, and once the WAL is past
        `WAL_RESTART_BYTES`, holding the writers' turn (both processes') with no transaction
        open, copy the few frames written meanwhile so the next writer starts it over. That
        pause (and its fsync) comes every few seconds under load, not every second.
        """
        try:
            ckpt.execute("PRAGMA wal_checkpoint(PASSIVE)")
            try:
                if os.path.getsize(self.path + "-wal") < self.wal_restart_bytes:
                    return  # the next writers keep appending: no pause for anyone
            except OSError:
                return
            with self._lock:
                self._commit()
                self._take_turn()  # no writer of either process meanwhile
                try:
                    # RESTART: copies the few frames written meanwhile and lets the next
                    # writer start the WAL over.
                    ckpt.execute("PRAGMA wal_checkpoint(RESTART)")
                finally:
                    self._end_turn()
        except (sqlite3.Error, StoreError):
            pass  # the next round tries again; the next durable write reports a broken file

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._dirty.set()
        self._flusher.join(10)
        with self._lock:
            try:
                self._commit()
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except (StoreError, sqlite3.Error):
                pass
            self._conn.close()
            self._end_turn()
            if self._write_lock is not None:
                os.close(self._write_lock)


class _Transaction:
    """Statements that commit or roll back together, holding the connection lock
    throughout: a SAVEPOINT when they join the shared transaction, else a transaction of
    their own (two statements fewer)."""

    def __init__(self, db: Database, durable: bool):
        self.db = db
        self.durable = durable
        self.nested = False

    def __enter__(self) -> sqlite3.Connection:
        self.db._lock.acquire()
        conn = self.db._conn
        try:
            self.nested = conn.in_transaction
            if self.nested:
                conn.execute("SAVEPOINT tx")
            else:
                self.db._begin()
        except sqlite3.Error as exc:
            self.db._check_open()
            self.db._lock.release()
            raise StoreError(f"SQLite failed: {exc}") from exc
        return conn

    def __exit__(self, exc_type, exc, tb) -> bool:
        db, conn = self.db, self.db._conn
        try:
            if exc_type is not None:  # SQLite may have rolled the whole transaction back
                db._check_open(earlier_writes=self.nested)
            try:
                if exc_type is None:
                    if self.nested:
                        conn.execute("RELEASE tx")
                elif conn.in_transaction:
                    if self.nested:
                        conn.execute("ROLLBACK TO tx")
                        conn.execute("RELEASE tx")
                    else:
                        try:
                            conn.execute("ROLLBACK")
                        finally:
                            db._check_open(earlier_writes=False)  # ours alone, closed: the turn goes back
            except sqlite3.Error as err:
                if exc_type is None:
                    db._check_open(earlier_writes=self.nested)
                    raise StoreError(f"SQLite failed: {err}") from err
            if exc_type is None:
                if self.durable:
                    self.db._commit()
                elif not self.db._batch_depth and not self.db._dirty.is_set():
                    self.db._dirty.set()
        finally:
            self.db._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"SQLite failed: {exc}") from exc
        return False


def _retry_busy(run: Callable[[], object]):
    """`run()`, retried while another process holds the lock it needs, within
    `LOCK_WAIT_S`. Pauses start at 50 µs: the other process's transactions are short
    (nobody holds the write lock across a handler or a request), and SQLite's own busy
    handler would sleep a whole millisecond first."""
    delay, deadline = 0.00005, None
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            now = time.monotonic()
            deadline = deadline or now + LOCK_WAIT_S
            if now >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)


_JSON_TEXT = json.JSONEncoder().encode  # json.dumps's own encoder, without its per-call checks


def _json_text(value: object) -> str:
    return "{}" if not value else _JSON_TEXT(value)


@functools.lru_cache(maxsize=1024)  # a few handler names, combined a few ways
def _done_json(done: tuple[str, ...]) -> str:
    return json.dumps(done) if done else "[]"


#: Rows per multi-row statement: far below SQLite's limit of 32,766 parameters.
_ROWS_PER_STATEMENT = 256


@functools.lru_cache(maxsize=None)
def _rows_sql(head: str, columns: int, rows: int, tail: str = "") -> str:
    """`head` VALUES (?, ...), ... `tail`: one statement for `rows` rows (one SQL text per
    row count, so SQLite's statement cache keeps each prepared)."""
    row = "(" + ", ".join("?" * columns) + ")"
    return f"{head} VALUES {', '.join([row] * rows)}{tail}"


def _chunks(items: list, size: int = _ROWS_PER_STATEMENT):
    for start in range(0, len(items), size):
        yield items[start : start + size]


_INSERT_CLAIMS_HEAD = "INSERT INTO claims (key, status, expires_at, version, done)"
_INSERT_CLAIMS_TAIL = " ON CONFLICT (key) DO NOTHING RETURNING key"
_INSERT_MESSAGES_HEAD = "INSERT INTO queue (event_id, body, visible_at)"
_INSERT_CLAIM = _rows_sql(_INSERT_CLAIMS_HEAD, 5, 1, " ON CONFLICT (key) DO NOTHING")
_INSERT_MESSAGE = _rows_sql(_INSERT_MESSAGES_HEAD, 3, 1)
# A compare-and-set per row: (key, expected version, status, expires_at, version, done).
_REPLACE_CLAIMS_HEAD = (
    "UPDATE claims SET status = v.column3, expires_at = v.column4, version = v.column5, done = v.column6 FROM ("
)
_REPLACE_CLAIMS_TAIL = ") AS v WHERE claims.key = v.column1 AND claims.version = v.column2 RETURNING claims.key"
_UPSERT_STATES_HEAD = "INSERT INTO device_state (device_id, event_type, version, event_id, timestamp, data, labels)"
_UPSERT_STATES_TAIL = (
    " ON CONFLICT (device_id, event_type) DO UPDATE SET"
    "   version = excluded.version, event_id = excluded.event_id, timestamp = excluded.timestamp,"
    "   data = excluded.data, labels = excluded.labels"
    " WHERE excluded.version > device_state.version"
)


def _insert_claims(conn: sqlite3.Connection, records: list[tuple[str, Claim]]) -> list[bool]:
    """Insert each ``(key, claim)`` unless its key has a record, one statement per
    `_ROWS_PER_STATEMENT`: whether each was created (False too for a key repeating an
    earlier one, which the first insert took)."""
    created: set[str] = set()
    for chunk in _chunks(records):
        params = [value for key, claim in chunk for value in _claim_row(key, claim)]
        sql = _rows_sql(_INSERT_CLAIMS_HEAD, 5, len(chunk), _INSERT_CLAIMS_TAIL)
        created.update(row[0] for row in conn.execute(sql, params).fetchall())
    made = []
    for key, _ in records:
        made.append(key in created)
        created.discard(key)
    return made


def _claim_row(key: str, claim: Claim) -> tuple:
    return (key, claim.status, claim.expires_at, claim.version, _done_json(claim.done))


class SQLiteClaimStore:
    """Claims on SQLite, committed as each use needs.

    `commit` says which writes are committed before they return (the others ride on the
    next commit, or the flusher's a few ms later, see `Database`):
    - ``"always"``: every write.
    - ``"never"``: ingest's claims. The enqueue that follows commits them, and a claim lost
      in a crash only means DT's retry queues a second copy, which the worker absorbs.
    - ``"progress"``: the worker's ledger. Only a write recording a finished handler must
      survive a crash, since that is what stops a redelivery from running the handler
      again. A lost lease or completion is redone by the redelivery, which finds the
      handlers already recorded and skips them.
    """

    def __init__(self, db: Database, commit: str = "always"):
        if commit not in ("always", "never", "progress"):
            raise ValueError(f"commit must be always, never or progress, not {commit!r}")
        self._db = db
        self._policy = commit

    def _durable(self, claim: Claim | None) -> bool:
        if self._policy == "progress":
            return claim is not None and claim.status == IN_PROGRESS and bool(claim.done)
        return self._policy == "always"

    def create(self, key: str, claim: Claim) -> bool:
        return self._db.write(_INSERT_CLAIM, _claim_row(key, claim), durable=self._durable(claim)) == 1

    def create_many(self, records: list[tuple[str, Claim]]) -> list[bool]:
        """`create` for each ``(key, claim)``, one statement per `_ROWS_PER_STATEMENT`:
        whether each was created (False when a record exists or an earlier one has the key)."""
        with self._db.transaction(durable=any(self._durable(claim) for _, claim in records)) as conn:  # all or none
            return _insert_claims(conn, records)

    def replace_many(self, items: list[tuple[str, str, Claim]]) -> list[bool]:
        """`replace` for each ``(key, expected_version, claim)`` (distinct keys), one statement
        per `_ROWS_PER_STATEMENT`: whether each was replaced."""
        replaced: set[str] = set()
        with self._db.transaction(durable=any(self._durable(claim) for _, _, claim in items)) as conn:  # all or none
            for chunk in _chunks(items):
                params = [value for key, expected, claim in chunk for value in
                          (key, expected, claim.status, claim.expires_at, claim.version, _done_json(claim.done))]
                sql = _rows_sql(_REPLACE_CLAIMS_HEAD, 6, len(chunk), _REPLACE_CLAIMS_TAIL)
                replaced.update(row[0] for row in conn.execute(sql, params).fetchall())
        return [key in replaced for key, _, _ in items]

    def get(self, key: str) -> Claim | None:
        rows = self._db.query("SELECT status, expires_at, version, done FROM claims WHERE key = ?", (key,))
        if not rows:
            return None
        row = rows[0]
        return Claim(row[0], row[1], row[2], tuple(json.loads(row[3])))

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        return self._db.write(
            "UPDATE claims SET status = ?, expires_at = ?, version = ?, done = ? WHERE key = ? AND version = ?",
            (claim.status, claim.expires_at, claim.version, _done_json(claim.done), key, expected_version),
            durable=self._durable(claim),
        ) == 1

    def delete(self, key: str, expected_version: str) -> bool:
        return self._db.write(
            "DELETE FROM claims WHERE key = ? AND version = ?", (key, expected_version), durable=self._durable(None)
        ) == 1

    def expire_in_progress(self, namespace: str | None = None) -> int:
        """After a restart nobody holds a claim any more: let retries take over now.
        `namespace`: only the claims of that namespace (the worker's ledger, ``w``)."""
        now = self._db.clock()
        if namespace is None:
            return self._db.write(
                "UPDATE claims SET expires_at = ? WHERE status = ? AND expires_at > ?",
                (now, IN_PROGRESS, now),
            )
        prefix = namespace + "_"
        return self._db.write(
            "UPDATE claims SET expires_at = ? WHERE status = ? AND expires_at > ? AND substr(key, 1, ?) = ?",
            (now, IN_PROGRESS, now, len(prefix), prefix),
        )


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    event_id: str
    body: str
    attempts: int  # including this delivery


class SQLiteQueue:
    """A durable queue with visibility timeouts, like SQS: a reserved message reappears
    after its lease unless acknowledged, so a worker killed mid-handler loses nothing.

    `enqueue`, `claim_and_enqueue`, `dead_letter` and `requeue_dead_letters` are durable on
    return. Reserving, acknowledging and rescheduling are committed with the next durable
    write (or by the flusher): lost in a crash, the message is simply delivered again, and
    the ledger knows what was already done.
    """

    def __init__(self, db: Database, wake: Callable[[], None] | None = None):
        self._db = db
        #: Called after each enqueue: wakes a worker in another process (`local_receiver.wake`).
        self.wake = wake

    @property
    def db(self) -> Database:
        return self._db

    @property
    def changed(self) -> threading.Condition:
        """Notified on every enqueue, so an idle worker thread in this process wakes at once."""
        return self._db.changed

    def enqueue(self, message: str, *, event_id: str) -> None:
        try:
            self._db.write(_INSERT_MESSAGE, (event_id, message, self._db.clock()))
        except StoreError as exc:
            raise QueueError(str(exc)) from exc
        self._notify()

    def claim_and_enqueue(self, key: str, claim: Claim, message: str, *, event_id: str) -> bool:
        """core's `AtomicOutbox`: claims and queue share this file, so a new event's claim
        and message are one transaction and one commit."""
        try:
            with self._db.transaction() as conn:
                if conn.execute(_INSERT_CLAIM, _claim_row(key, claim)).rowcount != 1:
                    return False
                conn.execute(_INSERT_MESSAGE, (event_id, message, self._db.clock()))
        except StoreError as exc:
            raise QueueError(str(exc)) from exc
        self._notify()
        return True

    def claim_and_enqueue_many(self, items: list[tuple[str, Claim, str, str]]) -> list[bool]:
        """`claim_and_enqueue` for many events, ``(key, claim, message, event_id)`` each, in
        one savepoint and two statements (inside a `Database.batch`: the group commit's).

        Returns, per item, whether its claim was created (False: a record existed, or an
        earlier item had the same key). All or nothing: every created claim has its message,
        or, raising `QueueError`, nothing was written, so the caller can retry the events
        one by one (`Receiver.accept_batch`) and a failure stays with the event it belongs to.
        """
        if not items:
            return []
        now = self._db.clock()
        try:
            with self._db.transaction() as conn:
                made = _insert_claims(conn, [(key, claim) for key, claim, _, _ in items])
                stored = [item for item, ok in zip(items, made) if ok]
                for chunk in _chunks(stored):
                    params = [value for _, _, message, event_id in chunk for value in (event_id, message, now)]
                    conn.execute(_rows_sql(_INSERT_MESSAGES_HEAD, 3, len(chunk)), params)
        except StoreError as exc:
            raise QueueError(str(exc)) from exc
        if stored:
            self._notify()
        return made

    def _notify(self) -> None:
        with self._db.changed:
            self._db.changed.notify_all()
        if self.wake is not None:  # the worker process, once the message is committed
            self._db.after_commit(self.wake)

    def reserve(self, lease_s: float) -> QueuedMessage | None:
        """The oldest visible message, hidden for `lease_s`: one statement."""
        batch = self.reserve_batch(lease_s, 1)
        return batch[0] if batch else None

    def reserve_batch(self, lease_s: float, limit: int) -> list[QueuedMessage]:
        """Up to `limit` visible messages, oldest first, each hidden for `lease_s`: one statement."""
        now = self._db.clock()
        rows = self._db.write_returning(
            "UPDATE queue SET visible_at = ?, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM queue WHERE visible_at <= ? ORDER BY visible_at, id LIMIT ?)"
            " RETURNING id, event_id, body, attempts",
            (now + lease_s, now, limit),
            durable=False,
        )
        return sorted((QueuedMessage(*row) for row in rows), key=lambda m: m.id)

    def peek_batch(self, limit: int) -> list[QueuedMessage]:
        """Up to `limit` visible messages, oldest first, without reserving them: a read,
        which never waits for the write lock. `reserve_peeked` then takes them."""
        rows = self._db.query(
            "SELECT id, event_id, body, attempts + 1 FROM queue WHERE visible_at <= ? ORDER BY visible_at, id LIMIT ?",
            (self._db.clock(), limit),
        )
        return [QueuedMessage(*row) for row in rows]

    def reserve_peeked(self, messages: list[QueuedMessage], lease_s: float) -> list[QueuedMessage]:
        """Reserve the peeked `messages` that are still visible, each hidden for `lease_s`
        (one statement per `_ROWS_PER_STATEMENT`): those, in the order given, with their
        attempts as counted now."""
        now = self._db.clock()
        attempts: dict[int, int] = {}
        for chunk in _chunks(messages):
            marks = ", ".join("?" * len(chunk))
            rows = self._db.write_returning(
                f"UPDATE queue SET visible_at = ?, attempts = attempts + 1 WHERE id IN ({marks}) AND visible_at <= ?"
                " RETURNING id, attempts",
                (now + lease_s, *(m.id for m in chunk), now),
                durable=False,
            )
            attempts.update(rows)
        return [message if message.attempts == attempts[message.id] else replace(message, attempts=attempts[message.id])
                for message in messages if message.id in attempts]

    def release(self, messages: list[QueuedMessage]) -> None:
        """Make reserved messages visible again at once (a worker stopping before their turn)."""
        for message in messages:
            self._db.write(
                "UPDATE queue SET visible_at = ?, attempts = attempts - 1 WHERE id = ?",
                (self._db.clock(), message.id),
                durable=False,
            )

    def next_visible_at(self) -> float | None:
        """When the next message becomes visible (now or in the past when one is waiting)."""
        return self._db.query("SELECT min(visible_at) FROM queue")[0][0]

    def ack(self, message: QueuedMessage) -> None:
        self._db.write("DELETE FROM queue WHERE id = ?", (message.id,), durable=False)

    def ack_many(self, messages: list[QueuedMessage]) -> None:
        """`ack` for each message, one statement per `_ROWS_PER_STATEMENT`."""
        for chunk in _chunks(messages):
            marks = ", ".join("?" * len(chunk))
            self._db.write(f"DELETE FROM queue WHERE id IN ({marks})", tuple(m.id for m in chunk), durable=False)

    def retry_later(self, message: QueuedMessage, delay_s: float, error: str) -> None:
        self._db.write(
            "UPDATE queue SET visible_at = ?, last_error = ? WHERE id = ?",
            (self._db.clock() + delay_s, error, message.id),
            durable=False,
        )

    def dead_letter(self, message: QueuedMessage, error: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO dead_letters (event_id, body, attempts, error, dead_at) VALUES (?, ?, ?, ?, ?)",
                (message.event_id, message.body, message.attempts, error, self._db.clock()),
            )
            conn.execute("DELETE FROM queue WHERE id = ?", (message.id,))

    def make_all_visible(self) -> int:
        """After a restart, messages reserved by the dead process are free at once."""
        now = self._db.clock()
        return self._db.write("UPDATE queue SET visible_at = ? WHERE visible_at > ?", (now, now))

    def depth(self) -> int:
        """Messages waiting or being handled: one row read (the `counts` triggers keep it)."""
        return self._db.query("SELECT n FROM counts WHERE name = 'queue'")[0][0]

    def dead_letter_count(self) -> int:
        return self._db.query("SELECT n FROM counts WHERE name = 'dead_letters'")[0][0]

    def dead_letters(self) -> list[dict]:
        rows = self._db.query("SELECT event_id, attempts, error, dead_at, body FROM dead_letters ORDER BY dead_at")
        return [dict(eventId=r[0], attempts=r[1], error=r[2], deadAt=r[3], body=r[4]) for r in rows]

    def requeue_dead_letters(self) -> int:
        """Move every dead letter back onto the queue (after the handler was fixed)."""
        with self._db.transaction() as conn:
            n = conn.execute(
                "INSERT INTO queue (event_id, body, visible_at) SELECT event_id, body, ? FROM dead_letters",
                (self._db.clock(),),
            ).rowcount
            conn.execute("DELETE FROM dead_letters")
        self._notify()
        return n


class SQLiteStateStore:
    """Device state writes are committed with the next durable write (or by the flusher):
    one lost in a crash is written again by the redelivery of its event."""

    def __init__(self, db: Database):
        self._db = db

    def put_if_newer(self, state: DeviceState) -> bool:
        return self.put_many_if_newer([state]) == 1

    def put_many_if_newer(self, states: list[DeviceState]) -> int:
        """`put_if_newer` for each state in order, one statement per `_ROWS_PER_STATEMENT`:
        how many were written (the others were older than the stored state)."""
        written = 0
        with self._db.transaction(durable=False) as conn:  # all or none
            for chunk in _chunks(states):
                params = [value for s in chunk for value in (
                    s.device_id, s.event_type, s.version, s.event_id, s.timestamp,
                    _json_text(s.data), _json_text(s.labels))]
                written += conn.execute(_rows_sql(_UPSERT_STATES_HEAD, 7, len(chunk), _UPSERT_STATES_TAIL), params).rowcount
        return written

    def get_device(self, device_id: str) -> list[DeviceState]:
        return list(self._select("WHERE device_id = ?", (device_id,)))

    def all(self) -> list[DeviceState]:
        return list(self._select("", ()))

    def _select(self, where: str, params: tuple) -> Iterator[DeviceState]:
        rows = self._db.query(
            "SELECT device_id, event_type, version, event_id, timestamp, data, labels FROM device_state "
            + where
            + " ORDER BY device_id, event_type",
            params,
        )
        for r in rows:
            yield DeviceState(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]))
