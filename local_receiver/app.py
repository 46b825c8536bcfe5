"""The local receiver assembled on one SQLite file: the web side (`LocalApp`: core's
`Receiver` behind a group commit) and the worker side (`LocalWorker`: core's `Worker`
fed by `QueueRunner`), each normally in its own process (`local_receiver.serve`).

Ingest (`LocalApp`): a request is admitted on the event loop (size, signature, parse:
CPU only), then handed to `GroupCommit`, one writer thread that runs every admitted
event waiting at that moment through `Receiver.accept` (core's claim state machine,
claim and message in one outbox write) inside one SQLite transaction, commits once, and
only then answers each of them. While the worker lags by more than ``DT_MAX_BACKLOG``
events, new events are answered 503 with ``Retry-After`` instead (DT retries).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from core.config import Settings, number_setting
from core.http import Request, Response
from core.logs import event_log
from core.receiver import Admitted, Receiver, backlog_full, log_accepted, max_backlog_setting, store_unavailable
from core.retention import dead_letter_retention_s
from core.worker import WORKER_NAMESPACE, Worker

from .metrics import MetricsRows, PrometheusRecorder, backlog_gauges
from .progress import JournaledLedger, ProgressJournal
from .queue_runner import QueueRunner
from .retention import DEFAULT_SWEEP_INTERVAL_S, BackgroundSweeper, SQLiteSweeper
from .sqlite_store import Database, SQLiteClaimStore, SQLiteQueue, SQLiteStateStore, StoreError, synchronous_setting
from .wake import WakeReader, WakeWriter

DEFAULT_DB = ".dtconnector/events.db"
#: How often the web process re-reads the queue and dead-letter counts (for /healthz and
#: the backlog bound): one row, so a tenth of a second costs nothing.
COUNTS_REFRESH_S = 0.1
#: How long a starting worker waits for the one it replaces to let go of the file.
WORKER_LOCK_WAIT_S = 30.0
#: Under load, the worker stores its counters (for the web process's /metrics) at most this
#: often; whenever the queue empties, at once.
METRICS_SAVE_S = 0.5
#: After a batch that was not full, the worker waits this long for more events before
#: taking the next (`QueueRunner.gather_s`): under load, batches of a few events each paid
#: a commit and a turn on the write lock; 10 ms of handler latency makes them larger.
WORKER_GATHER_S = 0.01


class AlreadyRunning(RuntimeError):
    pass


def exclusive_lock(path: str, message: str, wait_s: float = 0.0, stop: threading.Event | None = None):
    """An exclusive lock on `path` (held while the returned file is open), else `AlreadyRunning`."""
    handle = open(path, "w")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except OSError:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                handle.close()
                raise AlreadyRunning(message) from None
            (stop or threading.Event()).wait(0.05)


class Counts:
    """The queue's depth and the dead letters, re-read every `COUNTS_REFRESH_S` in a
    thread (one row each, kept by triggers): what ``/healthz`` and the backlog bound
    read, in O(1) and without touching SQLite on the event loop."""

    def __init__(self, queue: SQLiteQueue, interval_s: float = COUNTS_REFRESH_S):
        self._queue = queue
        self.interval_s = interval_s
        self.queued = 0
        self.dead_letters = 0
        self.ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            self.queued, self.dead_letters = self._queue.depth(), self._queue.dead_letter_count()
            self.ok = True
        except StoreError:
            self.ok = False

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="dtconnector-counts", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class GroupCommit:
    """The ingest writer: one thread, one SQLite transaction per batch of events.

    `accept` (on the event loop) and `submit` (any thread) queue an admitted event. The
    thread takes every event waiting, hands them to ``accept_batch`` (core's
    `Receiver.accept_batch`: new events claimed and queued in one write, any other alone)
    inside one `Database.batch`, commits once, logs the batch's 202s in one line, and only
    then answers them: no answer is sent before the commit holding its event, and no event
    waits for more than the batch running when it arrived plus its own. The events a loop
    admits during one of its turns reach the thread together, and the loop is woken once
    per batch: not once per event either way. If the commit fails every event of the batch is
    answered 503 (DT retries). A request's exception (a bug; or, in tests, a simulated
    crash) reaches that request alone.
    """

    _STOP = None

    def __init__(self, db: Database, accept_batch: Callable[[list[Admitted]], list],
                 unavailable: Callable[[], Response]):
        self._db = db
        self._accept_batch = accept_batch
        self._unavailable = unavailable
        # A C-level queue: putting costs a fraction of a `threading.Condition` round.
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._turns: dict[asyncio.AbstractEventLoop, list] = {}  # events admitted during a loop's current turn
        self._thread = threading.Thread(target=self._run, name="dtconnector-ingest-writer", daemon=True)
        self._thread.start()

    async def accept(self, admitted: Admitted) -> Response:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = []
            loop.call_soon(self._hand_over, loop)
        turn.append((admitted, future))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """At the end of a turn of `loop`: its events, to the writer in one put (one wake-up
        of the writer thread, not one per request)."""
        self._pending.put(self._turns.pop(loop))

    def submit(self, admitted: Admitted) -> Future:
        future: Future = Future()
        self._pending.put([(admitted, future)])
        return future

    def stop(self, timeout: float = 10.0) -> None:
        self._pending.put(self._STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        pending = self._pending
        while True:
            turns = [pending.get()]
            while True:  # and every event that arrived meanwhile
                try:
                    turns.append(pending.get_nowait())
                except queue.Empty:
                    break
            stopping = self._STOP in turns
            items = [item for turn in turns if turn is not self._STOP for item in turn]
            if items:
                self._answer(items, self._commit(items))
            if stopping:
                return

    def _commit(self, items: list[tuple[Admitted, object]]) -> list:
        try:
            with self._db.batch():
                try:
                    results = self._accept_batch([admitted for admitted, _ in items])
                except BaseException as exc:  # noqa: B036 (a bug: handed to the requests it concerns)
                    results = [exc] * len(items)
        except StoreError as exc:
            event_log(logging.ERROR, "could not commit accepted events", error=str(exc), events=len(items))
            return [self._unavailable() for _ in items]
        log_accepted(results)
        return results

    def _answer(self, items: list[tuple[Admitted, object]], results: list) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, future), result in zip(items, results):
            if isinstance(future, Future):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            else:
                by_loop.setdefault(future.get_loop(), []).append((future, result))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # that loop is closed: its requests are gone
                pass


def _settle(answers: list) -> None:
    """On the loop: resolve the futures of one batch (those not cancelled meanwhile)."""
    for future, result in answers:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class LocalIngest:
    """`core.asgi.Ingest` for `LocalApp`: admitted on the loop, stored by the group commit."""

    def __init__(self, app: "LocalApp"):
        self.app = app
        self.max_body_bytes = app.settings.max_body_bytes

    def admit(self, request: Request, *, may_fetch_keys: bool = True):
        return self.app.receiver.admit(request, may_fetch_keys=may_fetch_keys)

    async def accept(self, admitted: Admitted) -> Response:
        refused = self.app.refuse_over_backlog()
        if refused is not None:
            return refused
        return await self.app.group.accept(admitted)

    def record(self, response: Response, started: float) -> None:
        self.app.receiver.record_quietly(response, started)


class LocalApp:
    """The web side: receives DT's requests into the SQLite queue (see the module doc).

    Serve it with `asgi()` or `wsgi()`; its handlers run in a worker process
    (``dtconnector worker --db PATH``, or the one `dtconnector serve` starts), or, for
    embedding (`dtconnector stream`, tests), in a thread of this process (`start_worker`).
    """

    ROLE = "web"

    def __init__(
        self,
        db_path: str | Path = DEFAULT_DB,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        retry_base_s: float | None = None,
        *,
        max_backlog: int | None = None,
        synchronous: str | None = None,
        metrics_token: str | None = None,
    ):
        self.settings = settings or Settings.from_env()
        self.clock = clock
        self.retry_base_s = retry_base_s
        self.max_backlog = max_backlog_setting() if max_backlog is None else max_backlog
        self.metrics_token = metrics_token
        self.db = Database(db_path, clock, synchronous=synchronous or synchronous_setting())
        self.ingest_claims = SQLiteClaimStore(self.db, commit="never")  # ride on the outbox write's commit
        wake = None if self.db.path == ":memory:" else WakeWriter(self.db.path)
        self.queue = SQLiteQueue(self.db, wake=wake)
        self.state = SQLiteStateStore(self.db)
        self.counts = Counts(self.queue)
        self.metrics = PrometheusRecorder(backlog_gauges(lambda: self.counts.queued))
        self.metrics_rows = MetricsRows(self.db)
        self.receiver = Receiver(self.settings, self.ingest_claims, self.queue, clock, metrics=self.metrics)
        self._group: GroupCommit | None = None
        self._group_lock = threading.Lock()
        self._over_backlog_logged = 0.0
        self._lock_file = None
        self._local_worker: LocalWorker | None = None
        self._stopped = False
        self.counts.start()

    # -- ingest ---------------------------------------------------------------------------

    @property
    def group(self) -> GroupCommit:
        if self._group is None:
            with self._group_lock:
                if self._group is None:
                    self._group = GroupCommit(self.db, self.receiver.accept_batch, store_unavailable)
        return self._group

    def refuse_over_backlog(self) -> Response | None:
        """`backlog_full` while more than `max_backlog` events wait for the worker."""
        if self.counts.queued < self.max_backlog:
            return None
        now = time.monotonic()
        if now - self._over_backlog_logged > 10:  # say it, but not once per request
            self._over_backlog_logged = now
            event_log(logging.WARNING, "backlog over DT_MAX_BACKLOG: answering 503 until the worker catches up",
                      queued=self.counts.queued, limit=self.max_backlog)
        return backlog_full()

    def handle(self, request: Request) -> Response:
        """One request, synchronously (a WSGI server's thread): `Receiver.handle` with the
        group commit and the backlog bound."""
        started = time.perf_counter()
        try:
            admitted = self.receiver.admit(request)
            if isinstance(admitted, Response):
                response = admitted
            else:
                response = self.refuse_over_backlog() or self.group.submit(admitted).result()
        except Exception:
            response = self.receiver.internal_error()
        self.receiver.record_quietly(response, started)
        return response

    def ingest(self) -> LocalIngest:
        return LocalIngest(self)

    def health(self) -> dict:
        """What ``GET /healthz`` reports: counts kept by the database, re-read in the
        background (O(1), never a scan of the queue or the dead letters)."""
        return {"status": "ok" if self.counts.ok else "degraded", "queued": self.counts.queued,
                "deadLetters": self.counts.dead_letters}

    async def health_async(self) -> dict:
        return self.health()

    def metrics_text(self) -> str:
        """Prometheus text: this process's counters plus the worker's stored ones."""
        try:
            others = self.metrics_rows.others(self.ROLE)
        except StoreError:
            others = []
        return self.metrics.exposition(others)

    def asgi(self):
        """This receiver as an ASGI app (`dtconnector serve`; to mount in Starlette or
        FastAPI: `examples/mount_starlette.py`). Handlers run in a worker process."""
        from core.asgi import ReceiverASGI

        return ReceiverASGI(self.ingest(), self.health_async, metrics=self.metrics_text,
                            metrics_token=self.metrics_token)

    def wsgi(self):
        """This receiver as a WSGI app, to mount in Flask or Django (`examples/mount_flask.py`)."""
        from core.wsgi import ReceiverWSGI

        return ReceiverWSGI(
            self.handle, self.health, self.settings.max_body_bytes,
            metrics=self.metrics_text, record=self.receiver.record, metrics_token=self.metrics_token,
        )

    # -- ownership and the embedded worker ---------------------------------------------

    def take_ownership(self) -> None:
        """Make this process the only web process on the file (a second one refuses)."""
        if self.db.path == ":memory:":
            return
        self._lock_file = exclusive_lock(self.db.path + ".lock", f"another dtconnector is already serving {self.db.path}")

    @property
    def local_worker(self) -> "LocalWorker":
        """The worker side on this process's connection (loads the handlers on first use)."""
        if self._local_worker is None:
            self._local_worker = LocalWorker(self.db.path, self.settings, self.clock, self.retry_base_s, database=self.db)
        return self._local_worker

    @property
    def runner(self) -> QueueRunner:
        return self.local_worker.runner

    @property
    def worker(self) -> Worker:
        return self.local_worker.worker

    @property
    def claims(self) -> SQLiteClaimStore:
        """The worker's ledger store."""
        return self.local_worker.claims

    def start_worker(self) -> None:
        """Run the handlers in a thread of this process (embedding: `dtconnector stream`)."""
        self.local_worker.take_ownership()
        self.local_worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._local_worker is not None:
            self._local_worker.stop(timeout, close=False)
        if self._group is not None:
            self._group.stop()
        self.counts.stop()
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()


class LocalWorker:
    """The worker side: core's `Worker` (the user's handlers, the ledger, device state)
    fed by `QueueRunner`, and the cleanup of expired records. One per database
    (`take_ownership`), in `dtconnector serve`'s worker process or ``dtconnector worker``."""

    ROLE = "worker"

    def __init__(
        self,
        db_path: str | Path = DEFAULT_DB,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        retry_base_s: float | None = None,
        *,
        database: Database | None = None,
        synchronous: str | None = None,
    ):
        self.settings = settings or Settings.from_env()
        # NORMAL whatever DT_SQLITE_SYNCHRONOUS says: that setting is about the 202 (the web
        # process's commits). A finished handler's record (`local_receiver.progress`)
        # survives this process being killed either way; an fsync per finished handler
        # would cap the handlers at the disk's fsync rate.
        self.db = database or Database(db_path, clock, synchronous=synchronous or "NORMAL")
        self._owns_db = database is None
        # The worker's ledger: finished handlers journaled, folded in by each batch's commit.
        self.claims = (
            SQLiteClaimStore(self.db, commit="progress") if self.db.path == ":memory:"
            else JournaledLedger(self.db, ProgressJournal(self.db.path + ".progress"))
        )
        self.queue = SQLiteQueue(self.db)
        self.state = SQLiteStateStore(self.db)
        self.metrics = PrometheusRecorder()
        self.metrics_rows = MetricsRows(self.db)
        previous = self.metrics_rows.load(self.ROLE)
        if previous:  # a restarted worker continues its counters
            try:
                self.metrics.load(previous)
            except (ValueError, TypeError, KeyError):
                pass
        # Loads DT_HANDLERS: raises core.handlers.HandlerModuleError (one line) when broken.
        self.worker = Worker(self.settings, self.claims, self.state, clock=clock, metrics=self.metrics)
        if retry_base_s is None:
            retry_base_s = number_setting(os.environ, "DT_RETRY_DELAY_S", 1.0)
        self.runner = QueueRunner(
            self.worker,
            self.queue,
            max_attempts=self.settings.max_attempts,
            lease_s=self.settings.worker_lease_s,
            retry_base_s=retry_base_s,
            after_batch=self._close_batch,
            on_idle=self._save_metrics_now,
            gather_s=WORKER_GATHER_S,
        )
        self._metrics_saved_at = float("-inf")
        self._metrics_unsaved = False
        # Bounded storage: expired records are removed in the background (local_receiver.retention).
        self.sweeper = SQLiteSweeper(self.db, dead_letter_retention_s())
        self.background_sweeper = BackgroundSweeper(
            self.sweeper, clock, number_setting(os.environ, "DT_SWEEP_INTERVAL_S", DEFAULT_SWEEP_INTERVAL_S)
        )
        self._lock_file = None
        self._wake: WakeReader | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _close_batch(self) -> None:
        """Inside a batch's closing transaction: the journaled handler completions go into
        the ledger with it (`JournaledLedger.fold`), and this process's counters."""
        if isinstance(self.claims, JournaledLedger):
            self.claims.fold()
        self._save_metrics()

    def _save_metrics(self) -> None:
        """Store the counters with a batch's commit, at most every `METRICS_SAVE_S`
        (a snapshot is a few KiB of JSON: not once per small batch)."""
        now = time.monotonic()
        if now - self._metrics_saved_at >= METRICS_SAVE_S:
            self.metrics_rows.save(self.ROLE, self.metrics)
            self._metrics_saved_at, self._metrics_unsaved = now, False
        else:
            self._metrics_unsaved = True

    def _save_metrics_now(self) -> None:
        """The queue is empty: store what the last batches counted, in a commit of its own."""
        if self._metrics_unsaved:
            with self.db.batch():
                self.metrics_rows.save(self.ROLE, self.metrics)
            self._metrics_saved_at, self._metrics_unsaved = time.monotonic(), False

    def take_ownership(self, wait_s: float = WORKER_LOCK_WAIT_S) -> None:
        """Make this the only worker on the file, then recover from a crash.

        A killed worker left messages reserved and ledger entries held (handlers cut off
        mid-run); since the lock proves that worker is gone, all are released at once
        instead of after their leases. Waits up to `wait_s` for a worker being replaced
        (finishing its handler after SIGTERM) to let go.
        """
        if self.db.path != ":memory:":
            self._lock_file = exclusive_lock(self.db.path + ".worker.lock",
                                             f"another dtconnector worker is already processing {self.db.path}",
                                             wait_s, self._stop)
            self._wake = WakeReader(self.db.path)
        if isinstance(self.claims, JournaledLedger):
            self.claims.replay()  # handlers that finished after the last commit: not run again
        self.queue.make_all_visible()
        self.claims.expire_in_progress(WORKER_NAMESPACE)

    def run(self, stop: threading.Event | None = None) -> None:
        """Process the queue until `stop` (or `stop()`), the sweeper alongside."""
        stop = stop or self._stop
        self.background_sweeper.start()
        try:
            wait = self._wake.wait if self._wake is not None else None
            self.runner.run_forever(stop, idle_wait_s=0.5, wait=wait)
        finally:
            self.background_sweeper.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="dtconnector-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0, close: bool = True) -> None:
        self._stop.set()
        self.runner.stopping.set()
        with self.queue.changed:
            self.queue.changed.notify_all()
        if self._wake is not None:
            WakeWriter(self.db.path)()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            with self.db.batch():
                if isinstance(self.claims, JournaledLedger):
                    self.claims.fold()
                self.metrics_rows.save(self.ROLE, self.metrics)
        except StoreError:
            pass
        if isinstance(self.claims, JournaledLedger):
            self.claims.journal.close()
        if self._wake is not None:
            self._wake.close()
        if close and self._owns_db:
            self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()
