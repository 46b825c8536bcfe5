"""The ingest side: one DT request in, one status code out, well inside DT's 10 s.

verify → parse → claim the eventId → enqueue durably → mark the claim completed → 2xx.

Status codes (the same on every platform):
  202  accepted and durably queued           200  duplicate of an event already accepted
  400  body not JSON / lacks a required field 401  signature missing, invalid, expired, ...
  405  not a POST                             413  body over the size limit
  503  our store or queue failed, the same eventId is being handled right now, or no
       secret is configured. DT retries 503s, so nothing is lost while it lasts.
Nothing here answers 500: an unexpected error is logged and answered 503 (retry), since
the failure is ours, not the sender's.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from .claims import Claims, Outcome
from .config import Settings
from .events import InvalidEvent, body_text, parse_event
from .http import Request, Response
from .logs import event_log, log
from .ports import ClaimStore, EventQueue, StoreError
from .signature import SecretVerifier, SignatureError, signature_token

RETRY_AFTER_S = "5"


class Verifier(Protocol):
    def verify(self, token: str, body: bytes) -> dict: ...


def _error(status: int, error: str, reason: str, **headers: str) -> Response:
    return Response(status, {"error": error, "reason": reason}, headers)


def _warn_at_start(settings: Settings) -> None:
    if settings.secrets:
        if any(len(s.reveal().encode()) < 32 for s in settings.secrets):
            event_log(logging.WARNING, "a signature secret is shorter than 32 bytes; use a longer one")
        if settings.allow_unsigned:
            event_log(logging.WARNING, "DT_ALLOW_UNSIGNED is ignored because a signature secret is set")
    elif settings.allow_unsigned:
        event_log(
            logging.WARNING,
            "DT_ALLOW_UNSIGNED=1: accepting UNSIGNED requests. For local testing only; "
            "anyone who can reach this URL can inject events",
        )
    else:
        event_log(
            logging.ERROR,
            "DT_SIGNATURE_SECRET is not set: every POST will be answered 503 until it is",
        )


def _unavailable(reason: str) -> Response:
    return _error(503, "unavailable", reason, **{"Retry-After": RETRY_AFTER_S})


class Receiver:
    """Handles DT requests for one platform, given that platform's claim store and queue."""

    def __init__(
        self,
        settings: Settings,
        claim_store: ClaimStore,
        queue: EventQueue,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self._claims = Claims(claim_store, clock=clock)
        self._queue = queue
        self._verifier: Verifier | None = (
            SecretVerifier(settings.secrets, settings.leeway_s, clock) if settings.secrets else None
        )
        _warn_at_start(settings)

    def handle(self, request: Request) -> Response:
        try:
            response = self._handle(request)
        except Exception:  # a bug or an unforeseen store error: ours, so DT should retry
            log.exception("unexpected error while receiving an event")
            response = _unavailable("internal error; retry later")
        return response

    def _handle(self, request: Request) -> Response:
        if request.method.upper() != "POST":
            return Response(405, {"error": "method_not_allowed", "reason": "only POST is accepted"}, {"Allow": "POST"})
        body = request.body
        if len(body) > self.settings.max_body_bytes:
            event_log(logging.WARNING, "body too large", size=len(body))
            return Response(413, {"error": "payload_too_large", "limit": self.settings.max_body_bytes})

        if self._verifier is not None:
            try:
                self._verifier.verify(signature_token(request.headers), body)
            except SignatureError as exc:
                event_log(logging.WARNING, "rejected signature", reason=exc.reason)
                return _error(401, "unauthorized", exc.reason)
        elif not self.settings.allow_unsigned:
            event_log(
                logging.ERROR,
                "no signature secret configured: set DT_SIGNATURE_SECRET "
                "(or DT_ALLOW_UNSIGNED=1 for local testing only); answering 503 so DT retries",
            )
            return _unavailable("receiver is not configured (DT_SIGNATURE_SECRET is not set)")

        try:
            text = body_text(body)
            event = parse_event(text)
        except InvalidEvent as exc:
            event_log(logging.WARNING, "rejected body", reason=str(exc))
            return _error(400, "bad_request", str(exc))

        return self._accept(event.event_id, text)

    def _accept(self, event_id: str, text: str) -> Response:
        try:
            outcome, held = self._claims.acquire(event_id, self.settings.claim_lease_s)
        except StoreError as exc:
            event_log(logging.ERROR, "claim store failed", eventId=event_id, error=str(exc))
            return _unavailable("event store unavailable")
        if outcome is Outcome.DUPLICATE:
            event_log(logging.INFO, "duplicate", eventId=event_id)
            return Response(200, {"status": "duplicate", "eventId": event_id})
        if outcome is Outcome.IN_FLIGHT:
            event_log(logging.INFO, "in flight elsewhere", eventId=event_id)
            return _unavailable("this event is being received by another request")
        assert held is not None

        try:
            self._queue.enqueue(text, event_id=event_id)
        except StoreError as exc:
            event_log(logging.ERROR, "enqueue failed", eventId=event_id, error=str(exc))
            self._release_quietly(held, event_id)
            return _unavailable("event queue unavailable")
        except Exception:
            self._release_quietly(held, event_id)
            raise

        # The event is durably queued: from here on we answer 2xx whatever happens. If the
        # claim cannot be marked completed, it expires and a DT retry enqueues a second
        # copy, which the worker's ledger absorbs.
        try:
            if not self._claims.complete(held, self.settings.dedup_ttl_s):
                event_log(logging.WARNING, "claim was taken over before completion", eventId=event_id)
        except StoreError as exc:
            event_log(logging.WARNING, "could not mark claim completed", eventId=event_id, error=str(exc))
        event_log(logging.INFO, "accepted", eventId=event_id)
        return Response(202, {"status": "accepted", "eventId": event_id})

    def _release_quietly(self, held, event_id: str) -> None:
        try:
            self._claims.release(held)
        except StoreError as exc:  # the claim then simply expires after its short lease
            event_log(logging.WARNING, "could not release claim", eventId=event_id, error=str(exc))
