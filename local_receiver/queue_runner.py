"""Feeds the SQLite queue to core's `Worker`, doing what SQS plus a redrive policy do in the
cloud: redeliver failures with backoff, and dead-letter after `max_attempts`."""

from __future__ import annotations

import logging
import threading

from core.logs import event_log, log
from core.ports import StoreError
from core.worker import PoisonMessage, Worker

from .sqlite_store import SQLiteQueue


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
        idle: threading.Event | None = None,
        max_defer_s: float = 0.1,
    ):
        self.worker = worker
        self.queue = queue
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        # Ingest first: while requests are being answered the worker waits (up to
        # `max_defer_s` per message, so it is never starved), because a DT request has a
        # 10 s deadline and a queued event does not. Both share one GIL and one SQLite lock.
        self.idle = idle
        self.max_defer_s = max_defer_s
        self.settled = 0  # messages acknowledged or dead-lettered by this runner

    def run_once(self) -> bool:
        """Process one visible message. False when none is visible."""
        message = self.queue.reserve(self.lease_s)
        if message is None:
            return False
        try:
            self.worker.process(message.body)
        except Exception as exc:  # RetryLater, StoreError, or a bug: never lose the message
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, PoisonMessage) or message.attempts >= self.max_attempts:
                event_log(logging.ERROR, "dead-lettered", eventId=message.event_id, attempts=message.attempts)
                self.queue.dead_letter(message, error)
                self.worker.delivery_failed(dead_lettered=True)
                self.settled += 1
            else:
                self.worker.delivery_failed(dead_lettered=False)
                delay = min(self.retry_base_s * 2 ** (message.attempts - 1), self.retry_max_s)
                self.queue.retry_later(message, delay, error)
        else:
            self.queue.ack(message)
            self.settled += 1
        return True

    def drain(self, limit: int = 1_000_000) -> int:
        """Process until no message is visible (failures with a delay stay queued)."""
        count = 0
        while count < limit and self.run_once():
            count += 1
        return count

    def run_forever(self, stop: threading.Event, idle_wait_s: float = 0.5) -> None:
        changed = self.queue.changed
        while not stop.is_set():
            if self.idle is not None:
                self.idle.wait(self.max_defer_s)
            try:
                busy = self.run_once()
            except StoreError as exc:
                event_log(logging.ERROR, "queue unavailable", error=str(exc))
                busy = False
            except Exception:  # the worker thread must outlive any single message
                log.exception("worker loop error")
                busy = False
            if not busy:
                with changed:
                    changed.wait(idle_wait_s)
