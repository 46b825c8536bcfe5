"""The web dyno's receiver as ASGI and WSGI apps on Redis, configured from the environment
on first use (a missing variable answers 503, so DT retries, instead of a crash loop).

``app`` is what ``python -m heroku.web`` serves (the Procfile); mount it in your own
Starlette/FastAPI service (``Mount("/dt", app=app)``), or ``wsgi_app`` in Flask/Django.
The worker process (``python -m heroku.worker``) runs the handlers either way.
"""

from __future__ import annotations

import asyncio
import logging

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


def handle(request: Request) -> Response:
    try:
        receiver = runtime.receiver()
    except ConfigError as exc:
        return _not_configured(exc)
    return receiver.handle(request)


def health() -> tuple[int, dict]:
    try:
        runtime.redis().ping()
    except ConfigError as exc:
        response = _not_configured(exc)
        return response.status, response.payload
    except Exception as exc:  # redis.exceptions.RedisError, without importing redis here
        return 503, {"status": "unavailable", "redis": type(exc).__name__}
    return 200, {"status": "ok"}


class LazyIngest:
    """`core.asgi.Ingest` over the process's Receiver, built on first use: while the
    configuration is missing every POST is answered 503 (DT retries). Redis calls run in
    the loop's thread pool (``DT_HTTP_THREADS``)."""

    def __init__(self):
        self.max_body_bytes = _max_body_bytes()

    def admit(self, request: Request, *, may_fetch_keys: bool = True):
        try:
            receiver = runtime.receiver()
        except ConfigError as exc:
            return _not_configured(exc)
        return receiver.admit(request, may_fetch_keys=may_fetch_keys)

    async def accept(self, admitted) -> Response:
        return await asyncio.get_running_loop().run_in_executor(None, runtime.receiver().accept, admitted)

    def record(self, response: Response, started: float) -> None:
        try:
            receiver = runtime.receiver()
        except ConfigError:
            return
        receiver.record_quietly(response, started)


def _max_body_bytes() -> int:
    try:
        return runtime.settings().max_body_bytes
    except ConfigError:
        return DEFAULT_MAX_BODY_BYTES  # every request answers 503 until configured


class _Lazy:
    """Builds the app on first call, so importing this module reads no configuration."""

    def __init__(self, build):
        self._build = build
        self._app = None

    def _get(self):
        if self._app is None:
            self._app = self._build()
        return self._app


class _LazyASGI(_Lazy):
    async def __call__(self, scope, receive, send) -> None:
        await self._get()(scope, receive, send)


class _LazyWSGI(_Lazy):
    def __call__(self, environ, start_response):
        return self._get()(environ, start_response)


app = _LazyASGI(lambda: ReceiverASGI(LazyIngest(), health))
wsgi_app = _LazyWSGI(lambda: ReceiverWSGI(handle, health, _max_body_bytes()))
