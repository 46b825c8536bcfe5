"""Feeds the SQLite queue to core's `Worker`, doing what SQS plus a redrive policy do in the
cloud: redeliver failures with backoff, and dead-letter after `max_attempts`.

Messages are taken in batches, and each batch costs as few commits as its guarantees
allow (`run_batch`):

1. one commit: reserve up to `batch_size` messages, claim each in the ledger, write each
   device's state (`Worker.begin_prepared`); the messages were read and parsed before the
   write lock was taken (`_peek`), so the commit holds it only for the writes;
2. each handler that finishes is recorded before the next one starts
   (`Worker.run_handlers`; the ledger store journals that write, `local_receiver.progress`):
   a crash re-runs at most the one handler whose completion was not yet recorded;
3. one commit: mark the events completed (the journaled completions with them),
   acknowledge (delete) the messages, reschedule or dead-letter the failures, and whatever
   `after_batch` writes (the worker's journaled completions and its metrics).

No write transaction is open while a handler runs, so the web process's ingest commits
(another process, the same file) never wait for user code. Losing step 1 or 3 in a crash
only means a redelivery, which the ledger makes harmless. Running for good (`run_forever`),
a batch's step 3 and the next batch's step 1 follow each other with no handler between
them, so they share one commit: a batch costs one commit, not two.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from core.claims import Outcome
from core.logs import event_log, log
from core.ports import StoreError
from core.worker import Job, PoisonMessage, Worker

from .sqlite_store import QueuedMessage, SQLiteQueue

#: Messages read before a write turn, and each one's `Worker.prepare_batch` result.
_Peeked = tuple[list[QueuedMessage], list]

#: Messages taken per batch: large enough that the commits of steps 1 and 3 are shared by
#: many events, small enough that a stopping worker finishes quickly.
DEFAULT_BATCH_SIZE = 64


class QueueRunner:
    def __init__(
        self,
        worker: Worker,
        queue: SQLiteQueue,
        *,
        max_attempts: int,
        lease_s: float,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        after_batch: Callable[[], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        gather_s: float = 0.0,
    ):
        self.worker = worker
        self.queue = queue
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.batch_size = batch_size
        #: Called inside step 3's transaction (the worker process stores its metrics there),
        #: and when the queue has nothing visible (`on_idle`, outside any transaction).
        self.after_batch = after_batch
        self.on_idle = on_idle
        self.stopping = threading.Event()
        #: After a batch that was not full, how long `run_forever` lets more messages
        #: arrive before taking the next: a batch's fixed costs (its commit, the reserve
        #: statement, taking the write lock) are then shared by more events, at the price
        #: of that much handler latency.
        self.gather_s = gather_s

    def run_once(self) -> bool:
        """Process one visible message. False when none is visible."""
        return self.run_batch(limit=1) > 0

    def run_batch(self, limit: int | None = None) -> int:
        """Process up to `limit` (`batch_size`) visible messages, steps 1 to 3 with a
        commit each for steps 1 and 3; how many were taken."""
        db = self.queue.db
        peeked = self._peek(limit or self.batch_size)
        with db.batch():  # step 1
            batch = self._take(peeked)
        if batch is None:
            if self.on_idle is not None:
                self.on_idle()
            return 0
        try:
            self._run(batch)  # step 2
        finally:
            with db.batch():  # step 3 (also after a crash in step 2, as the flusher would)
                self._close(batch)
        return batch.taken

    def _peek(self, limit: int) -> _Peeked:
        """Before step 1, outside any transaction: up to `limit` visible messages read and
        prepared (parsed, their device states built: `Worker.prepare_batch`), so the write
        turn that follows holds the lock only for the writes (the web process's commits
        wait for it)."""
        messages = self.queue.peek_batch(limit)
        return messages, self.worker.prepare_batch([message.body for message in messages])

    def _take(self, peeked: _Peeked) -> "_Batch | None":
        """Step 1, inside the caller's transaction: reserve the peeked messages still
        visible and begin them (`Worker.begin_prepared`). None when there are none."""
        messages, prepared = peeked
        if not messages:
            return None
        by_id = dict(zip((message.id for message in messages), prepared))
        messages = self.queue.reserve_peeked(messages, self.lease_s)
        if not messages:
            return None
        batch = _Batch(len(messages))
        for message, job in zip(messages, self.worker.begin_prepared([by_id[message.id] for message in messages])):
            if isinstance(job, Exception):  # RetryLater, StoreError, or a bug: never lose the message
                batch.settled.append((message, job))
            elif isinstance(job, Outcome):  # a redelivery of a completed event
                batch.settled.append((message, None))
            else:
                batch.jobs.append((message, job))
        return batch

    def _run(self, batch: "_Batch") -> None:
        """Step 2, outside any transaction: each job's handlers; stopping, the jobs not
        started yet are given back."""
        jobs = batch.jobs
        for index, (message, job) in enumerate(jobs):
            if self.stopping.is_set():
                self._give_back(jobs[index:])
                break
            try:
                with self.worker.trace(message.body):
                    self.worker.run_handlers(job)
            except Exception as exc:
                batch.settled.append((message, exc))
            else:
                batch.settled.append((message, job))

    def _close(self, batch: "_Batch") -> None:
        """Step 3, inside the caller's transaction."""
        self._settle(batch.settled)
        if self.after_batch is not None:
            self.after_batch()

    def _settle(self, settled: list[tuple[QueuedMessage, Job | Exception | None]]) -> None:
        """Complete the finished jobs (one ledger write: `Worker.finish_batch`), acknowledge
        their messages and the redeliveries of completed events (one DELETE), and
        reschedule or dead-letter the failures."""
        finished = [job for _, job in settled if isinstance(job, Job)]
        try:
            outcomes = iter(self.worker.finish_batch(finished) if finished else ())
        except Exception as exc:  # a bug: every job of the batch is redelivered
            outcomes = iter([exc] * len(finished))
        acknowledged = []
        for message, outcome in settled:
            if isinstance(outcome, Job):
                outcome = next(outcomes)
            if isinstance(outcome, Exception):
                self._failed(message, outcome)
            else:
                acknowledged.append(message)
        self.queue.ack_many(acknowledged)

    def _failed(self, message: QueuedMessage, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, PoisonMessage) or message.attempts >= self.max_attempts:
            event_log(logging.ERROR, "dead-lettered", eventId=message.event_id, attempts=message.attempts)
            self.queue.dead_letter(message, error)
            self.worker.delivery_failed(dead_lettered=True)
        else:
            self.worker.delivery_failed(dead_lettered=False)
            delay = min(self.retry_base_s * 2 ** (message.attempts - 1), self.retry_max_s)
            self.queue.retry_later(message, delay, error)

    def _give_back(self, jobs: list[tuple[QueuedMessage, Job]]) -> None:
        """Stopping: the messages not started yet are visible again at once."""
        with self.queue.db.batch():
            for _, job in jobs:
                self.worker.abandon(job)
            self.queue.release([message for message, _ in jobs])

    def drain(self, limit: int = 1_000_000) -> int:
        """Process until no message is visible (failures with a delay stay queued)."""
        count = 0
        while count < limit:
            taken = self.run_batch()
            if not taken:
                break
            count += taken
        return count

    def run_forever(self, stop: threading.Event, idle_wait_s: float = 0.5, wait: Callable[[float], object] | None = None) -> None:
        """Process batches until `stop`. Idle, sleep in `wait(seconds)` (the wake-up pipe
        of `local_receiver.wake`; by default this process's enqueue notifications) until
        something is queued or the next delayed retry is due."""
        changed = self.queue.changed

        def notified(seconds: float) -> None:
            with changed:
                changed.wait(seconds)

        wait = wait or notified
        self.stopping = stop
        db = self.queue.db
        done: _Batch | None = None  # the last batch: its handlers ran, step 3 not yet committed
        try:
            while not stop.is_set():
                busy = False
                try:
                    if done is not None and done.taken < self.batch_size and self.gather_s > 0:
                        stop.wait(self.gather_s)  # under load, more arrive meanwhile
                    peeked = self._peek(self.batch_size) if not stop.is_set() else ([], [])
                    with db.batch():  # the last batch's step 3 and the next one's step 1: one commit
                        closing, done = done, None
                        if closing is not None:
                            self._close(closing)
                        batch = None if stop.is_set() else self._take(peeked)
                    if batch is None:
                        if self.on_idle is not None and not stop.is_set():
                            self.on_idle()
                    else:
                        busy = True
                        try:
                            self._run(batch)
                        finally:
                            done = batch
                except StoreError as exc:
                    event_log(logging.ERROR, "queue unavailable", error=str(exc))
                except Exception:  # the worker loop must outlive any single message
                    log.exception("worker loop error")
                if not busy and not stop.is_set():
                    wait(self._idle_wait(idle_wait_s))
        finally:
            if done is not None:
                with db.batch():
                    self._close(done)

    def _idle_wait(self, limit_s: float) -> float:
        """Until the next delayed message is due, at most `limit_s`."""
        try:
            due = self.queue.next_visible_at()
        except StoreError:
            return limit_s
        if due is None:
            return limit_s
        return max(0.0, min(limit_s, due - self.queue.db.clock()))


class _Batch:
    """Messages taken together: the jobs whose handlers are to run, and each message's
    outcome so far (a job, a redelivery of a completed event, an exception)."""

    __slots__ = ("taken", "jobs", "settled")

    def __init__(self, taken: int):
        self.taken = taken
        self.jobs: list[tuple[QueuedMessage, Job]] = []
        self.settled: list[tuple[QueuedMessage, Job | Exception | None]] = []
