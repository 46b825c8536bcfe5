"""The ingest side: one DT request in, one status code out, well inside DT's 10 s.

verify → parse → claim the eventId → enqueue durably → mark the claim completed → 2xx.
(With an `AtomicOutbox` the claim, written completed, and the message are one write.)

Status codes (the same on every platform):
  202  accepted and durably queued           200  duplicate of an event already accepted
  400  body not JSON / lacks a required field 401  signature missing, invalid, expired, ...
  405  not a POST                             413  body over the size limit
  503  our store or queue failed, the same eventId is being handled right now, the
       signature cannot be checked (no secret / asymmetric verification for the header
       the request carries, see core.signature.SignaturePolicy), DT's signing keys
       cannot be fetched, or (long-running receivers) more than ``DT_MAX_BACKLOG``
       events wait for the worker (`backlog_full`). DT retries 503s, so nothing is lost
       while it lasts.
Nothing here answers 500: an unexpected error is logged and answered 503 (retry), since
the failure is ours, not the sender's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from .claims import Claims, Outcome
from .config import ConfigError, Settings, number_setting
from .events import InvalidEvent, body_text, parse_event
from .http import Request, Response
from .logs import event_log, log
from .metrics import ACK_LATENCY, ENQUEUE_FAILURES, NULL, REQUESTS, Recorder
from .ports import COMPLETED, AtomicOutbox, BatchOutbox, ClaimStore, EventQueue, StoreError
from .signature import CannotVerify, KeysNeeded, SignatureError, SignaturePolicy
from .tracing import from_env as tracing_from_env

RETRY_AFTER_S = "5"
#: ``DT_MAX_BACKLOG``: past this many events accepted but not yet handled, a long-running
#: receiver answers 503 (`backlog_full`) instead of accepting more. A backlog the worker
#: clears in seconds at the rates `make bench` measures, far more than a burst of DT's
#: deliveries, and small enough that a broken or slow handler is noticed (and DT holds
#: the events, for 12 hours) before the store fills the disk.
DEFAULT_MAX_BACKLOG = 10_000
BACKLOG_FULL_REASON = "too many events waiting for the worker"


def _error(status: int, error: str, reason: str, **headers: str) -> Response:
    return Response(status, {"error": error, "reason": reason}, headers)


def _warn_at_start(policy: SignaturePolicy) -> None:
    for level, text in policy.startup_messages():
        event_log(level, text)


def _unavailable(reason: str) -> Response:
    return _error(503, "unavailable", reason, **{"Retry-After": RETRY_AFTER_S})


def max_backlog_setting(env=None) -> int:
    """``DT_MAX_BACKLOG`` (a whole number above 0), or `DEFAULT_MAX_BACKLOG` when unset."""
    import os

    value = number_setting(os.environ if env is None else env, "DT_MAX_BACKLOG", DEFAULT_MAX_BACKLOG)
    if value < 1 or value != int(value):
        raise ConfigError("DT_MAX_BACKLOG must be a whole number above 0")
    return int(value)


def backlog_full() -> Response:
    """The answer while the backlog is over ``DT_MAX_BACKLOG``: 503 with ``Retry-After``,
    so DT keeps the event and delivers it again once the worker caught up."""
    return _unavailable(BACKLOG_FULL_REASON)


def store_unavailable() -> Response:
    """The answer when our store failed: 503 with ``Retry-After`` (DT retries)."""
    return _unavailable("event store unavailable")


def accepted(event_id: str, logged: bool = True) -> Response:
    """202: the event is durably queued (logged, unless the caller logs a whole batch of
    them in one line: `log_accepted`). Every front end answers a new event so."""
    if logged:
        event_log(logging.INFO, "accepted", eventId=event_id)
    return Response(202, {"status": "accepted", "eventId": event_id})


def log_accepted(responses: list) -> None:
    """One log line for the events of a group commit answered 202, once committed:
    ``{"message": "accepted", "events": 3, "eventIds": [...]}`` (a line per event cost
    more than storing it)."""
    ids = [r.payload["eventId"] for r in responses if isinstance(r, Response) and r.status == 202]
    if ids:
        event_log(logging.INFO, "accepted", events=len(ids), eventIds=ids)


def duplicate(event_id: str) -> Response:
    """200: a copy of an event already accepted and still remembered (logged)."""
    event_log(logging.INFO, "duplicate", eventId=event_id)
    return Response(200, {"status": "duplicate", "eventId": event_id})


def in_flight(event_id: str) -> Response:
    """503: another request holds this event's claim right now; DT's retry settles it."""
    event_log(logging.INFO, "in flight elsewhere", eventId=event_id)
    return _unavailable("this event is being received by another request")


def reason_of(response: Response) -> str:
    """The fixed text saying why a request got its answer: ``accepted``, ``duplicate``, or
    the error's reason (bounded: core's reasons are constant strings, never request data)."""
    payload = response.payload
    return str(payload.get("reason") or payload.get("status") or payload.get("error") or response.status)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed every check (signed by DT, a well-formed event): what is left
    is to claim its `event_id` and enqueue `text`. Front ends that batch or await their
    store (`core.asgi.Ingest`) take it from `Receiver.admit` and store it their own way."""

    event_id: str
    text: str


class Receiver:
    """Handles DT requests for one platform, given that platform's claim store and queue.

    `handle` is the whole ingest path, synchronous, for serverless entry points. It is two
    steps, public so an event-loop server can run them apart: `admit` (CPU only: size,
    signature, parse) and `accept` (claim + enqueue: the store's I/O).
    """

    def __init__(
        self,
        settings: Settings,
        claim_store: ClaimStore,
        queue: EventQueue,
        clock: Callable[[], float] = time.time,
        metrics: Recorder = NULL,
    ):
        self.settings = settings
        self.metrics = metrics
        self._tracing = tracing_from_env()  # None unless DT_OTEL=1 and OpenTelemetry is installed
        self._claims = Claims(claim_store, clock=clock)
        self._queue = queue
        # Checked once: a runtime Protocol check costs ~10 µs, on every request otherwise.
        self._outbox = queue if isinstance(queue, AtomicOutbox) else None
        self._batch_outbox = queue if self._outbox is not None and isinstance(queue, BatchOutbox) else None
        # Which signature headers are required, per DT_SIGNATURE_MODE. Holds the cache of
        # DT's public keys, so it lives as long as this Receiver (the container).
        self.signature_policy = SignaturePolicy(settings, clock)
        _warn_at_start(self.signature_policy)

    def handle(self, request: Request) -> Response:
        if self._tracing is None:
            return self._answer(request)
        with self._tracing.ingest() as span:
            response = self._answer(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    def _answer(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            admitted = self.admit(request)
            response = admitted if isinstance(admitted, Response) else self.accept(admitted)
        except Exception:  # a bug or an unforeseen store error: ours, so DT should retry
            response = self.internal_error()
        self.record_quietly(response, started)
        return response

    @staticmethod
    def internal_error() -> Response:
        """The answer to an unexpected error of ours (logged here): 503, so DT retries."""
        log.exception("unexpected error while receiving an event")
        return _unavailable("internal error; retry later")

    def record_quietly(self, response: Response, started: float) -> None:
        try:
            self.record(response, started)
        except Exception:  # a broken recorder must not change the answer
            log.exception("could not record ingest metrics")

    def record(self, response: Response, started: float) -> None:
        """The ingest metrics of one answer (`started`: its `time.perf_counter()` on
        arrival). Every answer of `handle` passes here once; a front end that answers
        before calling `handle` (a 413 refused from Content-Length) calls it too."""
        status = str(response.status)
        self.metrics.count(REQUESTS, status=status, reason=reason_of(response))
        self.metrics.observe(ACK_LATENCY, time.perf_counter() - started, status=status)

    def admit(self, request: Request, *, may_fetch_keys: bool = True) -> "Response | Admitted":
        """Every check that needs no store: the early answer (405, 413, 401, 400, 503 when
        the signature cannot be checked), or the `Admitted` event.

        With ``may_fetch_keys=False`` this never blocks on the network: a request whose
        signature needs DT's keys fetched raises `KeysNeeded` instead, and an event loop
        calls again with True in a thread, so only that request waits for the key server.
        """
        if request.method.upper() != "POST":
            return Response(405, {"error": "method_not_allowed", "reason": "only POST is accepted"}, {"Allow": "POST"})
        body = request.body
        if len(body) > self.settings.max_body_bytes:
            event_log(logging.WARNING, "body too large", size=len(body))
            return Response(413, {"error": "payload_too_large", "limit": self.settings.max_body_bytes})

        try:
            self.signature_policy.check(request.headers, body, may_fetch_keys=may_fetch_keys)
        except SignatureError as exc:
            event_log(logging.WARNING, "rejected signature", reason=exc.reason)
            return _error(401, "unauthorized", exc.reason)
        except CannotVerify as exc:  # not configured, or DT's keys unreachable: DT retries
            event_log(logging.ERROR, exc.log_message)
            return _unavailable(exc.reason)
        except KeysNeeded:
            raise
        return self._parse(body)

    def _parse(self, body: bytes) -> "Response | Admitted":
        try:
            text = body_text(body)
            event = parse_event(text)
        except InvalidEvent as exc:
            event_log(logging.WARNING, "rejected body", reason=str(exc))
            return _error(400, "bad_request", str(exc))
        if self._tracing is not None:  # the worker's span continues this trace
            text = self._tracing.carry(text)
        return Admitted(event.event_id, text)

    def accept_verified(self, body: bytes) -> Response:
        """Ingest an event body whose origin is already proven another way (read from DT's
        authenticated REST API or stream): parse, claim, enqueue, with no signature check.
        The same answers as `handle` otherwise: 202, 200 duplicate, 400, 503 (retry)."""
        started = time.perf_counter()
        try:
            admitted = self._parse(body)
            response = admitted if isinstance(admitted, Response) else self.accept(admitted)
        except Exception:
            response = self.internal_error()
        self.record_quietly(response, started)
        return response

    def accept(self, admitted: Admitted) -> Response:
        """Claim the event id and enqueue the event: 202, 200 (duplicate) or 503."""
        return self._accept(admitted.event_id, admitted.text)

    def accept_batch(self, batch: list[Admitted]) -> list:
        """`accept` for events the caller stores in one transaction (a group commit), each
        answer (a `Response`, or the exception `accept` raised: a bug) in order. The 202s
        are not logged here: the caller logs them in one line once committed
        (`log_accepted`). New events are claimed and queued together, in one write of a
        `BatchOutbox`; should that write fail, or an event's id have a record already,
        that event goes through `accept` alone, so one event's failure is never another's."""
        if self._batch_outbox is None or len(batch) < 2:
            return [self._accept_one(admitted) for admitted in batch]
        store = self._batch_outbox.claim_and_enqueue_many
        try:
            held = self._claims.acquire_new(
                [admitted.event_id for admitted in batch],
                self.settings.claim_lease_s,
                lambda records: store([(key, claim, a.text, a.event_id) for (key, claim), a in zip(records, batch)]),
                completed_ttl_s=self.settings.dedup_ttl_s,
            )
        except Exception as exc:  # noqa: BLE001 (each event then meets its own failure, alone)
            event_log(logging.WARNING, "group write failed, storing its events one by one",
                      events=len(batch), error=str(exc))
            held = [None] * len(batch)
        return [
            accepted(admitted.event_id, logged=False) if h is not None else self._accept_one(admitted)
            for admitted, h in zip(batch, held)
        ]

    def _accept_one(self, admitted: Admitted):
        try:
            return self._accept(admitted.event_id, admitted.text, logged=False)
        except BaseException as exc:  # noqa: B036 (handed to the request it belongs to)
            return exc

    def _accept(self, event_id: str, text: str, logged: bool = True) -> Response:
        outbox = self._outbox
        create = None if outbox is None else (
            lambda key, claim: outbox.claim_and_enqueue(key, claim, text, event_id=event_id)
        )
        try:
            outcome, held = self._claims.acquire(
                event_id, self.settings.claim_lease_s, create, completed_ttl_s=self.settings.dedup_ttl_s
            )
        except StoreError as exc:
            event_log(logging.ERROR, "could not claim the event", eventId=event_id, error=str(exc))
            return store_unavailable()
        if outcome is Outcome.DUPLICATE:
            return duplicate(event_id)
        if outcome is Outcome.IN_FLIGHT:
            return in_flight(event_id)
        assert held is not None

        if not held.queued:
            try:
                self._queue.enqueue(text, event_id=event_id)
            except StoreError as exc:
                event_log(logging.ERROR, "enqueue failed", eventId=event_id, error=str(exc))
                self.metrics.count(ENQUEUE_FAILURES)
                self._release_quietly(held, event_id)
                return _unavailable("event queue unavailable")
            except Exception:
                self._release_quietly(held, event_id)
                raise

        # The event is durably queued: from here on we answer 2xx whatever happens. If the
        # claim cannot be marked completed, it expires and a DT retry enqueues a second
        # copy, which the worker's ledger absorbs. (An outbox wrote it completed already.)
        if held.claim.status != COMPLETED:
            try:
                if not self._claims.complete(held, self.settings.dedup_ttl_s):
                    event_log(logging.WARNING, "claim was taken over before completion", eventId=event_id)
            except StoreError as exc:
                event_log(logging.WARNING, "could not mark claim completed", eventId=event_id, error=str(exc))
        return accepted(event_id, logged)

    def _release_quietly(self, held, event_id: str) -> None:
        try:
            self._claims.release(held)
        except StoreError as exc:  # the claim then simply expires after its short lease
            event_log(logging.WARNING, "could not release claim", eventId=event_id, error=str(exc))
