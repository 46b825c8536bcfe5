"""The receiver as a standard WSGI application, for Flask, Django or any WSGI server.

Mount it on a path with werkzeug's ``DispatcherMiddleware`` (Flask) or call it from a
Django view; it refuses the same framing as `core.asgi` (the rules live there) and answers
``/healthz`` below its mount point.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from .asgi import (
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


class ReceiverWSGI:
    """WSGI app around ``handle`` (a `Receiver.handle`) and ``health``."""

    def __init__(
        self, handle: Handle, health: Health, max_body_bytes: int, *, metrics: Metrics | None = None,
        record: Record | None = None,
    ):
        self.handle = handle
        self.health = health
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.record = record

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.metrics is not None and is_metrics_scrape(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"):
            text = self.metrics().encode("utf-8")
            start_response("200 OK", [(k.decode(), v.decode()) for k, v in metrics_headers(text)])
            return [text]
        response = self._respond(environ)
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
        refused = framing_error(method, [length] if length else [], [chunked] if chunked else [], self.max_body_bytes)
        if refused is not None:
            return self._refused(refused, started)
        path = environ.get("PATH_INFO") or "/"
        if is_health_probe(method, path):
            return health_response(self.health)
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
