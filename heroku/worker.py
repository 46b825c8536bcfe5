"""The worker dyno: takes events off the Redis queue and runs core's Worker on each.

    python -m heroku.worker                  run until SIGTERM (Procfile: worker)
    python -m heroku.worker --burst          process everything due, then exit
    python -m heroku.worker --dead-letters   list dead-lettered events (JSON lines)
    python -m heroku.worker --requeue-dead-letters

Delivery: a message is redelivered until core's Worker returns, and dead-lettered after
`DT_MAX_ATTEMPTS` deliveries (PoisonMessage: at once). Retries wait
``DT_RETRY_DELAY_S * 2**(attempt-1)`` (capped at 300 s). A message whose event another
worker holds (EventInFlight) waits for that lease and does not use up an attempt.

Shutdown: on SIGTERM (Heroku sends it, then SIGKILL 30 s later) the worker takes no new
message. The current one may finish for `DT_SHUTDOWN_GRACE_S` (25 s); then it is
interrupted (an exception raised in the handler, so core records which handlers finished
and releases its lease) and put back on the queue without using up an attempt. If the
process dies anyway (SIGKILL, crash, lost dyno), its heartbeat expires and the next
worker moves its processing list back onto the queue: nothing taken is ever lost.

Batches: the worker takes up to `DT_WORKER_BATCH` messages in one round trip, claims
their events in the ledger and writes their device states in one script each, records each
finished handler as it finishes, marks the batch's events completed in one script and
acknowledges them in one more: one round trip per handler and four per batch, where one
event at a time cost three each. It is safe because every message stays in the worker's
processing list until it is acknowledged, retried or dead-lettered, and core's ledger says
which handlers finished: a worker killed mid-batch has all of its batch redelivered, the
claims it had begun expired by the recovering worker (they are listed under its id), and
the events it had finished are acknowledged without running anything. Only the messages
taken but not yet started count one delivery more than they were tried. The batch grows (doubling) while a
whole batch takes under `BATCH_TARGET_S` and shrinks back to one message when handlers are
slow, so a slow handler never holds events another worker could run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid

from core.logs import event_log, log
from core.ports import StoreError
from core.retention import DEFAULT_DEAD_LETTER_RETENTION_S, dead_letter_retention_s
from core.worker import EventInFlight, Job, PoisonMessage, RetryLater

from .queue import Message, RedisQueue

DEFAULT_RETRY_DELAY_S = 1.0
RETRY_MAX_S = 300.0
DEFAULT_SHUTDOWN_GRACE_S = 25.0
DEFAULT_HEARTBEAT_TTL_S = 30.0
MAINTENANCE_EVERY_S = 1.0
BACKLOG_EVERY_S = 60.0  # how often the worker samples the queue's depth (one pipelined round trip)
DEFAULT_MAX_BATCH = 64
BATCH_TARGET_S = 0.1


class WorkerShutdown(Exception):
    """Raised inside a running handler when the dyno must stop before it finished."""


def _env_float(name: str, default: float) -> float:
    from core.config import number_setting

    return number_setting(os.environ, name, default)


class QueueWorker:
    def __init__(
        self,
        worker,
        queue: RedisQueue,
        *,
        max_attempts: int,
        retry_base_s: float = DEFAULT_RETRY_DELAY_S,
        in_flight_delay_s: float = 30.0,
        heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
        worker_id: str | None = None,
        dead_letter_retention_s: float = DEFAULT_DEAD_LETTER_RETENTION_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ):
        self.worker = worker
        self.queue = queue
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.in_flight_delay_s = in_flight_delay_s
        self.heartbeat_ttl_s = max(heartbeat_ttl_s, 1.0)
        self.shutdown_grace_s = shutdown_grace_s
        self.dead_letter_retention_s = dead_letter_retention_s
        self.max_batch = max(1, max_batch)
        self.id = worker_id or f"{os.environ.get('DYNO', 'worker')}.{uuid.uuid4().hex[:12]}"
        self._stopping = threading.Event()
        self._in_job = False
        self._interrupted = False
        self._alarm_set = False

    @classmethod
    def from_env(cls) -> "QueueWorker":
        from . import runtime

        settings = runtime.settings()
        runner = cls(
            runtime.worker(),
            runtime.queue(),
            max_attempts=settings.max_attempts,
            retry_base_s=_env_float("DT_RETRY_DELAY_S", DEFAULT_RETRY_DELAY_S),
            in_flight_delay_s=min(settings.worker_lease_s, 30.0),
            heartbeat_ttl_s=_env_float("DT_HEARTBEAT_TTL_S", DEFAULT_HEARTBEAT_TTL_S),
            shutdown_grace_s=_env_float("DT_SHUTDOWN_GRACE_S", DEFAULT_SHUTDOWN_GRACE_S),
            dead_letter_retention_s=dead_letter_retention_s(),
            max_batch=int(_env_float("DT_WORKER_BATCH", DEFAULT_MAX_BATCH)),
        )
        runtime.claim_store().hold_in(runner.queue.held_key(runner.id))  # the ledger `runtime.worker()` writes
        return runner

    # -- signals (main thread only) -----------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGALRM, self._on_grace_expired)

    def _on_stop_signal(self, signum, frame) -> None:
        first = not self._stopping.is_set()
        self._stopping.set()
        if first:
            event_log(logging.INFO, "stop requested: taking no new events", signal=signum, busy=self._in_job)
        if self._in_job and not self._alarm_set and self.shutdown_grace_s > 0:
            self._alarm_set = True
            signal.setitimer(signal.ITIMER_REAL, self.shutdown_grace_s)

    def _on_grace_expired(self, signum, frame) -> None:
        if self._in_job:
            self._interrupted = True
            raise WorkerShutdown("the dyno is stopping; the event will be redelivered")

    def stop(self) -> None:
        self._stopping.set()

    # -- the loop -----------------------------------------------------------------------
    def run(self, burst: bool = False) -> int:
        """Process messages until stopped (or, with `burst`, until none is due). Returns
        how many messages were taken."""
        batch_size = 1
        taken = 0
        self.queue.register(self.id, self.heartbeat_ttl_s)
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(beat_stop,), name="dt-heartbeat", daemon=True)
        beat.start()
        try:
            self.queue.recover()
            self.queue.promote_due()
            self.queue.expire_dead_letters(self.dead_letter_retention_s)
            maintained = time.monotonic()
            sampled = self._sample_backlog()
            failures = 0
            while not self._stopping.is_set():
                try:
                    if time.monotonic() - maintained >= MAINTENANCE_EVERY_S:
                        self.queue.recover()
                        self.queue.promote_due()
                        self.queue.expire_dead_letters(self.dead_letter_retention_s)
                        maintained = time.monotonic()
                        if maintained - sampled >= BACKLOG_EVERY_S:
                            sampled = self._sample_backlog()
                    batch = self.queue.take(self.id, batch_size, block_s=0 if burst else 1.0)
                    if not batch:
                        if burst and self.queue.promote_due() == 0 and self.queue.recover() == 0:
                            break
                        continue
                    taken += len(batch)
                    started = time.monotonic()
                    self._process(batch)
                    batch_size = self._next_batch_size(batch_size, len(batch), time.monotonic() - started)
                    failures = 0
                except StoreError as exc:  # Redis unreachable: the queue's own operations
                    if burst:
                        raise
                    failures += 1
                    event_log(logging.ERROR, "queue unavailable", error=str(exc))
                    self._stopping.wait(min(0.5 * 2**failures, 15.0))
                    self._put_back_quietly()
        finally:
            beat_stop.set()
            try:
                self.queue.unregister(self.id)  # puts back anything still ours, uncounted
            except StoreError as exc:
                event_log(logging.ERROR, "could not unregister; heartbeat expiry will recover", error=str(exc))
        return taken

    def _put_back_quietly(self) -> None:
        """After a queue failure mid-batch, what is still in our processing list (taken
        but not started, or finished but not acknowledged) goes back on the queue now
        rather than when this worker exits; finished events are no-ops when redelivered."""
        try:
            self.queue.release(self.id, uncount=True)
        except StoreError:
            pass  # still down: the next failure tries again, and unregister at exit

    def _sample_backlog(self) -> float:
        """`sample#dt_queue_backlog`: messages waiting, delayed or being processed."""
        from core.metrics import QUEUE_BACKLOG

        self.worker.metrics.gauge(QUEUE_BACKLOG, self.queue.depth())
        return time.monotonic()

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_ttl_s / 3):
            try:
                self.queue.heartbeat(self.id, self.heartbeat_ttl_s)
            except StoreError as exc:
                event_log(logging.WARNING, "heartbeat failed", error=str(exc))

    def _process(self, batch: list[Message]) -> None:
        """Run `batch` with a round trip per step the batch shares, then acknowledge the
        finished messages in one more:

        1. one script claims the new events in the ledger (listing them in our held set,
           `RedisClaimStore.hold_in`) and one writes their device states (`Worker.begin_batch`);
        2. each event's handlers run, each finished handler recorded as it finishes
           (`Worker.run_handlers`): a crash re-runs at most the one not yet recorded;
        3. one script marks them completed (`Worker.finish_batch`).

        Once stopping, the events not started are let go in the ledger and their messages
        stay in our processing list for `unregister` to put back uncounted. If anything
        escapes (Redis down while retrying one), nothing is acknowledged: the finished ones
        are redelivered later and the ledger makes them no-ops, as after a crash; should
        this worker die, the next one's `recover` expires the claims it had begun."""
        done: list[Message] = []
        begun = list(zip(batch, self.worker.begin_batch([message.body for message in batch])))
        finished: list[tuple[Message, Job]] = []
        for index, (message, job) in enumerate(begun):
            if self._stopping.is_set():
                self._let_go([job for _, job in begun[index:] if isinstance(job, Job)])
                break
            if isinstance(job, Exception):
                self._failed(message, job)
            elif not isinstance(job, Job):  # a redelivery of a completed event
                done.append(message)
            elif self._run(message, job):
                finished.append((message, job))
        if finished:
            for (message, job), outcome in zip(finished, self._finish([job for _, job in finished])):
                if isinstance(outcome, Exception):
                    self._failed(message, outcome)
                else:
                    done.append(message)
        self.queue.ack(self.id, *done)

    def _finish(self, jobs: list[Job]) -> list:
        try:
            return self.worker.finish_batch(jobs)
        except Exception as exc:  # a bug: every job of the batch is redelivered
            log.exception("unexpected error while completing a batch")
            return [exc] * len(jobs)

    def _let_go(self, jobs: list[Job]) -> None:
        """Stopping: the begun events not started can be taken over at once."""
        for job in jobs:
            self.worker.abandon(job)

    def _next_batch_size(self, size: int, taken: int, elapsed_s: float) -> int:
        if elapsed_s >= BATCH_TARGET_S:
            return max(1, size // 2)
        if taken == size:  # a full batch, done quickly: take more next time
            return min(size * 2, self.max_batch)
        return size

    def _run(self, message: Message, job: Job) -> bool:
        """Run one begun event's handlers. True: it may be completed; False: it was put
        back for a retry or dead-lettered."""
        error: BaseException | None = None
        self._in_job = True
        try:
            with self.worker.trace(message.body):
                self.worker.run_handlers(job)
        except WorkerShutdown as exc:
            error = exc
        except (RetryLater, StoreError) as exc:
            error = exc
        except Exception as exc:  # not core's contract; treat like a failed attempt
            log.exception("unexpected error while processing", extra={"fields": {"messageId": message.id}})
            error = exc
        finally:
            self._in_job = False
        if self._alarm_set:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if error is None:
            return True
        self._failed(message, error)
        return False

    def _failed(self, message: Message, error: BaseException) -> None:
        """Put a message whose delivery failed back for a retry, or dead-letter it."""
        event_id = message.event_id
        dead = not self._interrupted and not isinstance(error, EventInFlight) and (
            isinstance(error, PoisonMessage) or message.attempts >= self.max_attempts
        )
        if self._interrupted:
            event_log(logging.WARNING, "interrupted by shutdown; will be redelivered", eventId=event_id)
            self.queue.retry(self.id, message, uncount=True)
        elif isinstance(error, EventInFlight):
            event_log(logging.INFO, "held by another worker; retrying after its lease", eventId=event_id)
            self.queue.retry(self.id, message, self.in_flight_delay_s, uncount=True)
        elif dead:
            event_log(logging.ERROR, "dead-lettered", eventId=event_id, attempts=message.attempts)
            self.queue.dead_letter(self.id, message, f"{type(error).__name__}: {error}")
        else:
            delay = min(self.retry_base_s * 2 ** (message.attempts - 1), RETRY_MAX_S)
            event_log(logging.WARNING, "will retry", eventId=event_id, attempts=message.attempts, delayS=delay)
            self.queue.retry(self.id, message, delay)
        self.worker.delivery_failed(dead_lettered=dead)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heroku.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", action="store_true", help="process every due event, then exit")
    parser.add_argument("--dead-letters", action="store_true", help="print dead-lettered events as JSON lines")
    parser.add_argument("--requeue-dead-letters", action="store_true", help="put dead-lettered events back")
    args = parser.parse_args(argv)

    from core import logs
    from core.config import ConfigError

    from . import runtime

    logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
    try:
        if args.dead_letters or args.requeue_dead_letters:
            queue = runtime.queue()
            if args.requeue_dead_letters:
                print(f"requeued {queue.requeue_dead_letters()} dead-lettered events")
            else:
                for item in queue.dead_letters():
                    print(json.dumps(item))
            from .report import store_report

            report = store_report(runtime.redis(), runtime.prefix()).to_dict(time.time())
            print(f"store: {json.dumps(report, sort_keys=True)}", file=sys.stderr)
            return 0
        runner = QueueWorker.from_env()
    except ConfigError as exc:
        print(f"heroku.worker: {exc}", file=sys.stderr)
        return 2
    runner.install_signal_handlers()
    event_log(logging.INFO, "worker started", worker=runner.id, burst=args.burst)
    try:
        count = runner.run(burst=args.burst)
    except StoreError as exc:
        event_log(logging.ERROR, "queue unavailable", error=str(exc))
        return 1
    event_log(logging.INFO, "worker stopped", worker=runner.id, taken=count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
