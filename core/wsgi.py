"""The receiver as a standard WSGI application, for Flask, Django or any WSGI server.

Mount it on a path with werkzeug's ``DispatcherMiddleware`` (Flask) or call it from a
Django view; it refuses the same framing as `core.asgi` (the rules live there) and answers
``/healthz`` below its mount point (and ``/metrics``, cached for a second, behind the
same ``DT_METRICS_TOKEN`` rule as the ASGI app).

WSGI hands an application one ``CONTENT_LENGTH``, so a server that folds two
``Content-Length`` headers into one hides a framing attack from it. Werkzeug's
development server (``flask run``, ``app.run()``) keeps the last value and drops the
others; its request handler, which calls us, still holds every header, so we ask it
(`_werkzeug_content_lengths`). gunicorn refuses such a request before we see it.
"""

from __future__ import annotations

import hmac
import sys
import threading
import time
from typing import Any, Callable, Iterable

from .asgi import (
    METRICS_MAX_AGE_S,
    Handle,
    Health,
    Metrics,
    Record,
    framing_error,
    health_response,
    is_health_probe,
    is_metrics_scrape,
    metrics_headers,
    response_headers,
)
from .http import Headers, Request, Response

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 503: "Service Unavailable"}


def _environ_headers(environ: dict) -> list[tuple[str, str]]:
    pairs = [(k[5:].replace("_", "-").lower(), v) for k, v in environ.items() if k.startswith("HTTP_")]
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            pairs.append((name, environ[key]))
    return pairs


def _werkzeug_content_lengths(environ: dict) -> list[str] | None:
    """Every ``Content-Length`` of the request, when Werkzeug's development server is
    calling us (None otherwise): the `werkzeug.serving.WSGIRequestHandler` up the call
    stack parsed them all, though its environ keeps only the last."""
    if not str(environ.get("SERVER_SOFTWARE", "")).startswith("Werkzeug/"):
        return None
    frame = sys._getframe(2)
    while frame is not None:
        handler = frame.f_locals.get("self") if frame.f_code.co_name == "run_wsgi" else None
        if handler is not None and type(handler).__module__.startswith("werkzeug.") and hasattr(handler, "headers"):
            return list(handler.headers.get_all("Content-Length") or [])
        frame = frame.f_back
    return None


class _Cached:
    """``metrics()`` rebuilt at most once per `METRICS_MAX_AGE_S`, one build at a time."""

    def __init__(self, build: Metrics):
        self.build = build
        self._lock = threading.Lock()
        self._text = b""
        self._at = float("-inf")

    def __call__(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at >= METRICS_MAX_AGE_S:
                self._text, self._at = self.build().encode("utf-8"), time.monotonic()
            return self._text


class ReceiverWSGI:
    """WSGI app around ``handle`` (a `Receiver.handle`) and ``health``."""

    def __init__(
        self, handle: Handle, health: Health, max_body_bytes: int, *, metrics: Metrics | None = None,
        record: Record | None = None, metrics_token: str | None = None,
    ):
        self.handle = handle
        self.health = health
        self.max_body_bytes = max_body_bytes
        self.metrics = None if metrics is None else _Cached(metrics)
        self.record = record
        self._token = None if metrics_token is None else "Bearer " + metrics_token

    def _authorized(self, environ: dict) -> bool:
        if self._token is None:
            return True
        presented = environ.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(presented.encode("latin-1"), self._token.encode("latin-1"))

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.metrics is not None and is_metrics_scrape(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"):
            if not self._authorized(environ):
                return self._send(environ, start_response,
                                  Response(401, {"error": "unauthorized", "reason": "metrics token required"}))
            text = self.metrics()
            start_response("200 OK", [(k.decode(), v.decode()) for k, v in metrics_headers(text)])
            return [text]
        return self._send(environ, start_response, self._respond(environ))

    def _send(self, environ: dict, start_response: Callable[..., Any], response: Response) -> Iterable[bytes]:
        body = b"" if environ["REQUEST_METHOD"] == "HEAD" else response.body.encode("utf-8")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response_headers(response, body)]
        start_response(f"{response.status} {_REASONS.get(response.status, 'Status')}", headers)
        return [body]

    def _refused(self, response: Response, started: float) -> Response:
        """An answer given here, before `handle` (which counts its own answers)."""
        if self.record is not None:
            self.record(response, started)
        return response

    def _respond(self, environ: dict) -> Response:
        started = time.perf_counter()
        method = environ["REQUEST_METHOD"]
        length = environ.get("CONTENT_LENGTH") or ""
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "")
        lengths = _werkzeug_content_lengths(environ)
        if lengths is None:
            lengths = [length] if length else []
        refused = framing_error(method, lengths, [chunked] if chunked else [], self.max_body_bytes)
        if refused is not None:
            return self._refused(refused, started)
        path = environ.get("PATH_INFO") or "/"
        if is_health_probe(method, path):
            response = health_response(self.health)
            if not self._authorized(environ):
                response = Response(response.status, {"status": response.payload.get("status", "ok")})
            return response
        body = self._read_body(environ["wsgi.input"], int(length) if length else None)
        if body is None:
            return self._refused(Response(413, {"error": "payload_too_large", "limit": self.max_body_bytes}), started)
        return self.handle(Request(method, body, Headers(_environ_headers(environ)), path))

    def _read_body(self, stream, length: int | None) -> bytes | None:
        if length is not None:
            return stream.read(length) if length else b""
        # Chunked: the server de-chunks and ends the stream; read one byte past the limit.
        body = stream.read(self.max_body_bytes + 1)
        return None if len(body) > self.max_body_bytes else body
