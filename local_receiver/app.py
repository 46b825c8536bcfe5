"""The local receiver assembled: core's Receiver and Worker on one SQLite file."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Callable

from core.config import Settings, number_setting
from core.http import Request, Response
from core.retention import dead_letter_retention_s
from core.receiver import Receiver
from core.worker import Worker

from .metrics import PrometheusRecorder, backlog_gauges
from .queue_runner import QueueRunner
from .retention import DEFAULT_SWEEP_INTERVAL_S, BackgroundSweeper, SQLiteSweeper
from .sqlite_store import Database, SQLiteClaimStore, SQLiteQueue, SQLiteStateStore

DEFAULT_DB = ".dtconnector/events.db"
#: Past this many events enqueued but not yet handled, each new event first sleeps
#: PACE_S (`LocalApp.handle`): on the server's event loop that stalls ingest for a moment
#: and hands the GIL to the worker thread, which a busy loop otherwise starves. Bounded per
#: request, so slow handlers slow acknowledgements down but never past DT's deadline.
PACE_BACKLOG = 200
PACE_S = 0.001


class AlreadyRunning(RuntimeError):
    pass


class LocalApp:
    def __init__(
        self,
        db_path: str | Path = DEFAULT_DB,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        retry_base_s: float | None = None,
    ):
        self.settings = settings or Settings.from_env()
        self.db = Database(db_path, clock)
        self.claims = SQLiteClaimStore(self.db, commit="progress")  # the worker's ledger
        self.ingest_claims = SQLiteClaimStore(self.db, commit="never")  # ride on the enqueue's commit
        self.queue = SQLiteQueue(self.db)
        self.state = SQLiteStateStore(self.db)
        self.metrics = PrometheusRecorder(backlog_gauges(self.queue.depth))
        self.receiver = Receiver(self.settings, self.ingest_claims, self.queue, clock, metrics=self.metrics)
        self.worker = Worker(self.settings, self.claims, self.state, clock=clock, metrics=self.metrics)
        if retry_base_s is None:
            retry_base_s = float(os.environ.get("DT_RETRY_DELAY_S", "1"))
        self.runner = QueueRunner(
            self.worker,
            self.queue,
            max_attempts=self.settings.max_attempts,
            lease_s=self.settings.worker_lease_s,
            retry_base_s=retry_base_s,
        )
        # Bounded storage: expired records are removed in the background (local_receiver.retention).
        self.sweeper = SQLiteSweeper(self.db, dead_letter_retention_s())
        self.background_sweeper = BackgroundSweeper(
            self.sweeper, clock, number_setting(os.environ, "DT_SWEEP_INTERVAL_S", DEFAULT_SWEEP_INTERVAL_S)
        )
        self._lock_file = None
        self._stop = threading.Event()
        self._worker_thread: threading.Thread | None = None

    def take_ownership(self) -> None:
        """Make this process the only one serving the file, then recover from a crash.

        A killed process left messages reserved and claims held (ingest requests cut off
        mid-flight, handlers cut off mid-run); since the lock proves that process is gone,
        all are released at once instead of after their leases, so DT's next retry and the
        queued messages go through immediately.
        """
        if self.db.path == ":memory:":
            return
        self._lock_file = open(self.db.path + ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AlreadyRunning(f"another dtconnector is already serving {self.db.path}") from None
        self.queue.make_all_visible()
        self.claims.expire_in_progress()

    def health(self) -> dict:
        """What ``GET /healthz`` reports: the queue's depth and the dead letters."""
        return {"status": "ok", "queued": self.queue.depth(), "deadLetters": len(self.queue.dead_letters())}

    def behind(self) -> bool:
        """The worker lags the acknowledgements by more than `PACE_BACKLOG` events."""
        return self.queue.enqueued - self.runner.settled > PACE_BACKLOG

    def handle(self, request: Request) -> Response:
        """`Receiver.handle`, paced against the worker (see `PACE_BACKLOG`)."""
        if request.method == "POST" and self.behind():
            time.sleep(PACE_S)
        return self.receiver.handle(request)

    def ingest(self, offload: bool = True):
        """`core.asgi.Ingest` for this receiver, paced against the worker like `handle`.
        ``offload=False`` stores inline on the loop (`dtconnector serve`)."""
        from core.asgi import ReceiverIngest

        app = self

        class PacedIngest(ReceiverIngest):
            async def accept(self, admitted):
                if app.behind():
                    time.sleep(PACE_S)
                return await super().accept(admitted)

        return PacedIngest(self.receiver, offload=offload)

    def asgi(self, offload: bool = True):
        """This receiver as an ASGI app, to mount in Starlette/FastAPI (`examples/mount_starlette.py`).
        Call `take_ownership` and `start_worker` first, `stop` at shutdown."""
        from core.asgi import ReceiverASGI

        return ReceiverASGI(self.ingest(offload), self.health, metrics=self.metrics.exposition)

    def wsgi(self):
        """This receiver as a WSGI app, to mount in Flask or Django (`examples/mount_flask.py`)."""
        from core.wsgi import ReceiverWSGI

        return ReceiverWSGI(
            self.handle, self.health, self.settings.max_body_bytes,
            metrics=self.metrics.exposition, record=self.receiver.record,
        )

    def start_worker(self) -> None:
        self._worker_thread = threading.Thread(
            target=self.runner.run_forever, args=(self._stop,), name="dtconnector-worker", daemon=True
        )
        self._worker_thread.start()
        self.background_sweeper.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with self.queue.changed:
            self.queue.changed.notify_all()
        if self._worker_thread is not None:
            self._worker_thread.join(timeout)
        self.background_sweeper.stop()
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()
