"""The worker side: one queued message in, the user's handlers run once, state updated.

Queues redeliver (at-least-once, sometimes concurrently), so the worker keeps a ledger in
the claim store under the ``w`` namespace: it claims the event for a lease, records each
handler that finishes, and marks the event completed. A redelivery of a completed event
is acknowledged without running anything; a redelivery after a failure runs only the
handlers that had not finished.

In direct mode (`DT_DELIVERY=direct`) DT itself wrote the message: there was no ingest
claim, so this ledger is the only dedup, and the message is first decoded by
`core.direct.decode_direct_message`; everything after that is the same code.

`process` returns normally when the message may be acknowledged and raises otherwise;
each platform maps "raised" onto its queue's redelivery (and, after a bounded number of
attempts, its dead-letter queue).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, NamedTuple

from .claims import Claims, Held, Outcome
from .config import Settings
from .events import Event, InvalidEvent, parse_event
from .handlers import HandlerRegistry, message_of, raised_at, registry as default_registry, type_name
from .logs import event_log, log
from .metrics import (
    DEAD_LETTERED,
    END_TO_END_LAG,
    EVENTS_PROCESSED,
    HANDLER_RUNS,
    NULL,
    RETRIES,
    STALE_STATE_SKIPPED,
    Recorder,
    event_type_label,
)
from .ports import ClaimStore, DeviceState, DeviceStateStore, StoreError
from .retention import Retention
from .tracing import from_env as tracing_from_env, split_message

WORKER_NAMESPACE = "w"


class RetryLater(Exception):
    """The message must stay on the queue and be delivered again."""


class PoisonMessage(RetryLater):
    """The message can never be processed (not a DT event). Platforms may dead-letter it at
    once; redelivering it is harmless, only wasteful."""


class EventInFlight(RetryLater):
    """Another worker holds this event right now; try again after its lease."""


class HandlerFailed(RetryLater):
    """A user's handler raised. Its text is what a dead letter keeps on every platform
    (the local and Heroku dead-letter lists, IBM's `lastError`, the cloud workers' log
    line), so it carries why: the handler, the exception's type and message (one line,
    bounded) and where it was raised::

        handler handlers.record failed for event E1: KeyError: 'value' (at handlers.py:12)

    `parse` reads that text back into its parts, for `dtconnector dead-letters`."""

    _TEXT = re.compile(
        r"handler (?P<handler>\S+) failed for event (?P<eventId>\S+)"
        r"(?:: (?P<exceptionType>[\w.]+)(?:: (?P<exceptionMessage>.*?))?(?: \(at (?P<raisedAt>[^()]*(?:\([^()]*\))?)\))?)?$"
    )

    def __init__(self, event_id: str, handler: str, error: BaseException | None = None, func: Callable | None = None):
        """`error` is what the handler raised; `func` the handler, whose own source line is
        named first when the error was raised deeper (in a library it called)."""
        self.event_id = event_id
        self.handler = handler
        own_file = getattr(getattr(inspect.unwrap(func), "__code__", None), "co_filename", None) if func else None
        self.exception_type = type_name(error) if error is not None else ""
        self.exception_message = message_of(error) if error is not None else ""
        self.raised_at = raised_at(error, own_file) if error is not None else ""
        text = f"handler {handler} failed for event {event_id}"
        if error is not None:
            text += f": {self.exception_type}"
            text += f": {self.exception_message}" if self.exception_message else ""
            text += f" (at {self.raised_at})" if self.raised_at else ""
        super().__init__(text)

    @classmethod
    def parse(cls, text: str) -> dict[str, str] | None:
        """The parts of a dead letter's error text written by this class (with or without
        the ``HandlerFailed: `` prefix the queue runners add); None for any other error."""
        if text.startswith(f"{cls.__name__}: "):
            text = text[len(cls.__name__) + 2 :]
        match = cls._TEXT.match(text)
        return {k: v or "" for k, v in match.groupdict().items()} if match else None


@dataclass
class Job:
    """An event claimed in the ledger whose handlers are to run (`Worker.begin`)."""

    event: Event
    held: Held
    #: Handlers that finished but are not in the ledger yet: `finish` records them with the
    #: completion. Should that write fail (the store, or the process dying), they run again
    #: on redelivery: the one window the README states.
    finished: tuple[str, ...] = ()


class Prepared(NamedTuple):
    """A queued message parsed, with the device state it writes (`Worker.prepare_batch`)."""

    event: Event
    state: DeviceState


def state_of(event: Event) -> DeviceState:
    data = event.raw.get("event", {}).get("data")
    return DeviceState(
        device_id=event.device_id,
        event_type=event.event_type,
        version=event.version,
        event_id=event.event_id,
        timestamp=event.raw["event"]["timestamp"],
        data=data if isinstance(data, dict) else {},
        labels=event.labels,
    )


class Worker:
    def __init__(
        self,
        settings: Settings,
        ledger: ClaimStore,
        state: DeviceStateStore,
        registry: HandlerRegistry = default_registry,
        clock: Callable[[], float] = time.time,
        metrics: Recorder = NULL,
        retention: Retention | None = None,
    ):
        self.settings = settings
        self._retention = Retention.from_env() if retention is None else retention
        self.metrics = metrics
        self._tracing = tracing_from_env()  # None unless DT_OTEL=1 and OpenTelemetry is installed
        self._clock = clock
        self._claims = Claims(ledger, WORKER_NAMESPACE, clock)
        # A ledger and a state store that write many records in one statement (the local
        # receiver's SQLite file; `begin_batch`, `finish_batch`). Checked once.
        self._create_many = getattr(ledger, "create_many", None)
        self._replace_many = getattr(ledger, "replace_many", None)
        self._put_many = getattr(state, "put_many_if_newer", None)
        self._state = state
        self._registry = registry
        registry.load(settings.handler_modules)

    def process(self, message: str | bytes) -> Outcome:
        """Handle one queued message. Returns CLAIMED (processed now) or DUPLICATE (done
        before). Raises `RetryLater` or `StoreError` when the message must be redelivered."""
        message, traceparent = split_message(message)  # the trace context ingest carried, if any
        if self._tracing is None:
            return self._process(message)
        with self._tracing.process(traceparent):
            return self._process(message)

    def _process(self, message: str | bytes) -> Outcome:
        job = self.begin(message)
        if isinstance(job, Outcome):
            return job
        # The completion follows at once: it records the last handler too (one store write
        # per event fewer, and the same window: a crash between that handler returning and
        # the write re-runs that one handler, as it would between it and its own record).
        self.run_handlers(job, record_last=False)
        return self.finish(job)

    # `process` in three steps, for a worker that batches its store writes (the local
    # receiver): `begin` and `finish` only write to the stores, so a batch of messages'
    # begins (or finishes) can share one commit; `run_handlers` runs the user's code and
    # records each finished handler as it goes. Each raises as `process` does, having
    # let the redelivery take over (`_abandon_quietly`).

    def begin(self, message: str | bytes) -> "Job | Outcome":
        """Parse, claim the event in the ledger, write the device state. Returns the `Job`
        whose handlers are to run, or DUPLICATE for a redelivery of a completed event."""
        return self._begin_event(self._parse(message))

    def _begin_event(self, event: Event) -> "Job | Outcome":
        """`begin` for an event already parsed (`begin_batch` parses each message once)."""
        outcome, held = self._claims.acquire(event.event_id, self.settings.worker_lease_s)
        if outcome is Outcome.DUPLICATE:
            event_log(logging.INFO, "redelivery of a completed event", eventId=event.event_id)
            return outcome
        if outcome is Outcome.IN_FLIGHT:
            raise EventInFlight(event.event_id)
        assert held is not None
        job = Job(event, held)
        self._write_state(job)
        return job

    def _write_state(self, job: "Job") -> None:
        with self._abandoning(job):
            if self._state.put_if_newer(state_of(job.event)):
                event_log(logging.DEBUG, "device state updated", eventId=job.event.event_id)
            elif job.held.first:  # a redelivery finds its own earlier write: not stale
                self.metrics.count(STALE_STATE_SKIPPED)

    def begin_batch(self, messages: list) -> list:
        """`begin` for a batch of messages whose writes share one commit: per message, its
        `Job`, DUPLICATE, or the exception `begin` would have raised."""
        return self.begin_prepared(self.prepare_batch(messages))

    def prepare_batch(self, messages: list) -> list:
        """The part of `begin_batch` that needs no store: each message parsed and its
        device state built (`Prepared`), or its `PoisonMessage` (logged). A caller whose
        writes hold a lock other writers wait for (the local receiver's one SQLite file)
        prepares before taking it, then calls `begin_prepared` inside."""
        prepared: list = []
        for message in messages:
            try:
                event = self._parse(message)
                prepared.append(Prepared(event, state_of(event)))
            except Exception as exc:  # PoisonMessage (logged), or a bug: that message's failure alone
                prepared.append(exc)
        return prepared

    def begin_prepared(self, prepared: list) -> list:
        """`begin_batch`'s writes, for what `prepare_batch` returned. Events never seen are
        claimed in one write of the ledger and their device states written in one (when the
        stores can: ``create_many``, ``put_many_if_newer``); any other event (an id with a
        ledger record, or one of a group write that failed) goes through `begin` alone, so
        the state machine and every failure stay per event."""
        results: list = [item if isinstance(item, Exception) else None for item in prepared]
        ready = [(index, item) for index, item in enumerate(prepared) if not isinstance(item, Exception)]
        if self._create_many is None or self._put_many is None:
            for index, item in ready:
                results[index] = _outcome_of(self._begin_event, item.event)
            return results
        try:
            held = self._claims.acquire_new([item.event.event_id for _, item in ready], self.settings.worker_lease_s,
                                            self._create_many)
        except Exception:  # noqa: BLE001 (each message then meets its own failure, alone)
            held = [None] * len(ready)
        jobs = []
        for (index, item), claim in zip(ready, held):
            if claim is None:
                results[index] = _outcome_of(self._begin_event, item.event)
            else:
                jobs.append((index, Job(item.event, claim), item.state))
        if not jobs:
            return results
        try:
            changed = self._put_many([state for _, _, state in jobs])
        except Exception:  # noqa: BLE001 (a failed statement leaves nothing written: one by one)
            for index, job, _ in jobs:
                results[index] = _outcome_of(self._write_state, job) or job
        else:
            if changed < len(jobs):  # new claims only: a skipped write is a newer event's
                self.metrics.count(STALE_STATE_SKIPPED, len(jobs) - changed)
            for index, job, _ in jobs:
                results[index] = job
        return results

    def _parse(self, message: str | bytes) -> Event:
        """The event a queued message carries, or `PoisonMessage` (logged)."""
        message, _ = split_message(message)
        try:
            if self.settings.delivery == "direct":
                from .direct import decode_direct_message

                message = decode_direct_message(message, self.settings.max_body_bytes)
            event = parse_event(message)
        except InvalidEvent as exc:
            event_log(
                logging.ERROR,
                "poison message: not a DT event, it will be dead-lettered",
                reason=str(exc),
                delivery=self.settings.delivery,
            )
            raise PoisonMessage(str(exc)) from None
        return event

    def run_handlers(self, job: "Job", *, record_last: bool = True) -> None:
        """Run the handlers that have not finished yet, recording each as it finishes.
        ``record_last=False``: the last one is left for `finish` to record with the
        completion (`Job.finished`), for a caller that finishes right after."""
        event = job.event
        with self._abandoning(job):
            pending = [h for h in self._registry.handlers_for(event.event_type) if h.name not in job.held.done]
            for index, handler in enumerate(pending):
                try:
                    handler.func(event)
                except Exception as exc:
                    log.exception("handler failed", extra={"fields": {"eventId": event.event_id, "handler": handler.name}})
                    self.metrics.count(HANDLER_RUNS, outcome="error", handler=handler.name)
                    raise HandlerFailed(event.event_id, handler.name, exc, handler.func) from None
                self.metrics.count(HANDLER_RUNS, outcome="ok", handler=handler.name)
                if record_last or index < len(pending) - 1:
                    job.held = self._claims.record_progress(job.held, handler.name)
                else:
                    job.finished = (handler.name,)

    def finish(self, job: "Job", *, logged: bool = True) -> Outcome:
        """Mark the event completed in the ledger (every handler has finished). `logged`:
        its "processed" line (`finish_batch` writes one for the batch instead)."""
        event = job.event
        with self._abandoning(job):
            if not self._claims.complete(job.held, self._completed_ttl_s(job), job.finished):
                event_log(logging.WARNING, "ledger was taken over before completion", eventId=event.event_id)
        if logged:
            event_log(logging.INFO, "processed", eventId=event.event_id, eventType=event.event_type)
        self._count_processed(event)
        return Outcome.CLAIMED

    def finish_batch(self, jobs: list["Job"]) -> list:
        """`finish` for a batch of jobs whose writes share one commit: per job, CLAIMED or
        the exception `finish` would have raised. The completions are one write of the
        ledger when it can (``replace_many``); should that write fail, each job is
        finished alone. One "processed" line for the batch, with the `eventIds`."""
        completed = None
        if self._replace_many is not None and len(jobs) >= 2:
            try:
                completed = self._claims.complete_many(
                    [(job.held, self._completed_ttl_s(job), job.finished) for job in jobs], self._replace_many)
            except Exception:  # noqa: BLE001 (each job then meets its own failure, alone)
                completed = None
        if completed is None:
            results = [_outcome_of(functools.partial(self.finish, logged=False), job) for job in jobs]
        else:
            results = []
            for job, ok in zip(jobs, completed):
                if not ok:
                    event_log(logging.WARNING, "ledger was taken over before completion", eventId=job.event.event_id)
                self._count_processed(job.event)
                results.append(Outcome.CLAIMED)
        ids = [job.event.event_id for job, result in zip(jobs, results) if result is Outcome.CLAIMED]
        if ids:
            event_log(logging.INFO, "processed", events=len(ids), eventIds=ids)
        return results

    def _completed_ttl_s(self, job: "Job") -> float:
        return self._retention.completed_ttl_s(self.settings.dedup_ttl_s, after_failure=not job.held.first)

    def _count_processed(self, event: Event) -> None:
        label = event_type_label(event.event_type)
        self.metrics.count(EVENTS_PROCESSED, eventType=label)
        self.metrics.observe(END_TO_END_LAG, self._clock() - event.timestamp.timestamp(), eventType=label)

    def abandon(self, job: "Job") -> None:
        """Give up a begun job without running it (a worker stopping): the next delivery
        takes over at once, keeping the handlers already done."""
        self._abandon_quietly(job.held, job.event.event_id)

    def trace(self, message: str | bytes) -> ContextManager:
        """The span in which a message's handlers run when tracing is on (`process` opens
        it itself; a worker calling the steps opens it around `run_handlers`)."""
        if self._tracing is None:
            return nullcontext()
        return self._tracing.process(split_message(message)[1])

    @contextmanager
    def _abandoning(self, job: "Job") -> Iterator[None]:
        try:
            yield
        except BaseException:
            # RetryLater, StoreError, an adapter's untranslated error, or the runtime
            # stopping us (SystemExit, a timeout signal): keep the progress and let the
            # redelivery take over at once rather than after the lease.
            self._abandon_quietly(job.held, job.event.event_id)
            raise

    def delivery_failed(self, dead_lettered: bool) -> None:
        """Platforms call this when a delivery raised: the queue either redelivers it (a
        retry) or, after its last attempt, dead-letters it. Only the platform knows which."""
        self.metrics.count(DEAD_LETTERED if dead_lettered else RETRIES)

    def _abandon_quietly(self, held, event_id: str) -> None:
        try:
            self._claims.abandon(held)
        except StoreError:  # the lease then expires on its own
            event_log(logging.WARNING, "could not release worker lease", eventId=event_id)


def _outcome_of(step: Callable, arg):
    """`step(arg)`, or the exception it raised (a batch hands each message its own)."""
    try:
        return step(arg)
    except Exception as exc:
        return exc
