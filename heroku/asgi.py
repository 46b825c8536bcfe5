"""The web dyno's receiver as ASGI and WSGI apps on Redis, configured from the environment
on first use (a missing variable answers 503, so DT retries, instead of a crash loop).

``app`` is what ``python -m heroku.web`` serves (the Procfile); mount it in your own
Starlette/FastAPI service (``Mount("/dt", app=app)``), or ``wsgi_app`` in Flask/Django.
The worker process (``python -m heroku.worker``) runs the handlers either way.

On the event loop, a request is admitted inline (size, signature, parse: CPU only) and
accepted by `heroku.ingest`: one Redis script call, on Redis's asyncio client, claims and
queues it (together with whatever other requests arrived meanwhile). No thread is used,
except for a signature whose DT keys must first be fetched (`core.asgi.answer`). Every
answer, including those refused from the headers (413), is counted through the process's
l2met recorder (`heroku.metrics`).
"""

from __future__ import annotations

import logging
import time

from core.asgi import ReceiverASGI
from core.config import ConfigError
from core.http import Request, Response
from core.wsgi import ReceiverWSGI

from . import runtime

log = logging.getLogger("dtconnector.heroku")
DEFAULT_MAX_BODY_BYTES = 256 * 1024


def _not_configured(exc: ConfigError) -> Response:
    log.error("receiver is not configured: %s", exc)
    return Response(503, {"error": "unavailable", "reason": f"receiver is not configured ({exc})"}, {"Retry-After": "5"})


def record(response: Response, started: float) -> None:
    """Count one answer: through the Receiver once configured, else straight to the
    recorder (a dyno answering 503 for want of a variable should show it)."""
    try:
        receiver = runtime.receiver()
    except ConfigError:
        from core.metrics import ACK_LATENCY, REQUESTS
        from core.receiver import reason_of

        from .metrics import RECORDER

        status = str(response.status)
        RECORDER.count(REQUESTS, status=status, reason=reason_of(response))
        RECORDER.observe(ACK_LATENCY, time.perf_counter() - started, status=status)
        return
    receiver.record_quietly(response, started)


def _unhealthy(exc: Exception) -> tuple[int, dict]:
    if isinstance(exc, ConfigError):
        response = _not_configured(exc)
        return response.status, response.payload
    return 503, {"status": "unavailable", "redis": type(exc).__name__}  # never the URL


async def health() -> tuple[int, dict]:
    """``/healthz`` on the loop: one PING on the asyncio client."""
    try:
        await runtime.ingest().client.ping()
    except Exception as exc:  # ConfigError, or redis.exceptions.RedisError without importing redis here
        return _unhealthy(exc)
    return 200, {"status": "ok"}


def health_sync() -> tuple[int, dict]:
    """``/healthz`` for the WSGI mount."""
    try:
        runtime.redis().ping()
    except Exception as exc:
        return _unhealthy(exc)
    return 200, {"status": "ok"}


class LazyIngest:
    """`core.asgi.Ingest` over the loop's `heroku.ingest.RedisIngest`, built on first use:
    while the configuration is missing every POST is answered 503 (DT retries)."""

    def __init__(self):
        self.max_body_bytes = _max_body_bytes()

    def admit(self, request: Request, *, may_fetch_keys: bool = True):
        try:
            ingest = runtime.ingest()
        except ConfigError as exc:
            return _not_configured(exc)
        return ingest.admit(request, may_fetch_keys=may_fetch_keys)

    async def accept(self, admitted) -> Response:
        return await runtime.ingest().accept(admitted)

    def record(self, response: Response, started: float) -> None:
        record(response, started)


def handle(request: Request) -> Response:
    """The whole ingest path, synchronous (the WSGI mount): admit, then the same script as
    the ASGI app for this one event."""
    from .ingest import accept_now

    started = time.perf_counter()
    try:
        receiver = runtime.receiver()
    except ConfigError as exc:
        response = _not_configured(exc)
    else:
        try:
            admitted = receiver.admit(request)
            response = admitted if isinstance(admitted, Response) else accept_now(
                runtime.accept_call(), runtime.accept_script(), admitted
            )
        except Exception:
            from core.receiver import Receiver

            response = Receiver.internal_error()
    record(response, started)
    return response


def _max_body_bytes() -> int:
    try:
        return runtime.settings().max_body_bytes
    except ConfigError:
        return DEFAULT_MAX_BODY_BYTES  # every request answers 503 until configured


class _Lazy:
    """Builds the app on first call, so importing this module reads no configuration (and
    again after `runtime.reset()`: tests change the environment between apps)."""

    def __init__(self, build):
        self._build = build
        self._app = None
        self._generation = -1

    def _get(self):
        if self._generation != runtime.generation:
            self._app, self._generation = self._build(), runtime.generation
        return self._app


class _LazyASGI(_Lazy):
    async def __call__(self, scope, receive, send) -> None:
        await self._get()(scope, receive, send)


class _LazyWSGI(_Lazy):
    def __call__(self, environ, start_response):
        return self._get()(environ, start_response)


app = _LazyASGI(lambda: ReceiverASGI(LazyIngest(), health))
wsgi_app = _LazyWSGI(lambda: ReceiverWSGI(handle, health_sync, _max_body_bytes(), record=record))
