"""The receiver as a standard ASGI 3 application: serve it with any ASGI server, or mount
it on a path in Starlette/FastAPI (``Mount("/dt", app=...)``) or Django's ASGI router.

No framework needed: the server hands us headers and body chunks, we hand core's
`Request` to a ``handle`` callable and send its `Response` back. What the server may let
through is refused here, so the framing rules hold under any server:

- a body must be framed: ``Content-Length`` (one value, ASCII digits only) or
  ``Transfer-Encoding: chunked`` alone (the server de-chunks; the checksum is verified
  over the exact decoded bytes). None: 411; both, two lengths, or ``5_17``: 400;
- over ``max_body_bytes``: 413 from the header before reading, or as soon as a chunked
  body passes the limit;
- every 4xx answer carries ``Connection: close``: the unread rest of a refused request
  must never be parsed as the next request on that connection.

Given ``metrics`` (Prometheus text), ``GET /metrics`` serves it, built in a thread and
cached for `METRICS_MAX_AGE_S` (one build at a time, whoever asks); the answers refused
here, before the receiver sees the request, are counted through the ingest's ``record``.
Given a ``metrics_token`` (``DT_METRICS_TOKEN``), ``/metrics`` needs
``Authorization: Bearer <token>`` (401 otherwise) and ``/healthz`` shows its counts only
to the same header (``{"status": "ok"}`` to anyone else). A ``/healthz`` or ``/metrics``
request whose client has already hung up is not answered at all.

Nothing slow runs on the event loop: a request is *admitted* inline (size, signature,
parse: CPU only), and only a request whose signature needs DT's keys fetched waits for the
key server, in a thread (`core.tokens.KeysNeeded`); the claim and enqueue then go to the
platform's `Ingest.accept`, which awaits its store (a thread, an asyncio client, or a
group commit shared by concurrent requests).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import os
import time
from typing import Any, Awaitable, Callable, Mapping, Protocol

from .http import Headers, Request, Response
from .logs import log
from .tokens import KeysNeeded

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
Handle = Callable[[Request], Response]
Health = Callable[[], "tuple[int, dict] | dict | Awaitable[tuple[int, dict] | dict]"]
Metrics = Callable[[], str]
Record = Callable[[Response, float], None]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_GONE = object()
#: How long one build of ``/metrics`` serves every scrape.
METRICS_MAX_AGE_S = 1.0


def metrics_token_setting(env: Mapping[str, str] | None = None) -> str | None:
    """``DT_METRICS_TOKEN``: when set, what ``/metrics`` and ``/healthz``'s counts require."""
    value = (os.environ if env is None else env).get("DT_METRICS_TOKEN", "").strip()
    return value or None


class CachedText:
    """A text built by a blocking function in a thread, at most once per `max_age_s`;
    concurrent callers share the build in progress instead of starting their own."""

    def __init__(self, build: Callable[[], str], max_age_s: float = METRICS_MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.build = build
        self.max_age_s = max_age_s
        self.clock = clock
        self._text: bytes | None = None
        self._built_at = 0.0
        self._building: "asyncio.Future[bytes] | None" = None

    async def get(self) -> bytes:
        if self._text is not None and self.clock() - self._built_at < self.max_age_s:
            return self._text
        if self._building is None:
            loop = asyncio.get_running_loop()
            self._building = asyncio.ensure_future(loop.run_in_executor(None, self._build))
            self._building.add_done_callback(self._built)
        return await asyncio.shield(self._building)

    def _build(self) -> bytes:
        return self.build().encode("utf-8")

    def _built(self, future: "asyncio.Future[bytes]") -> None:
        self._building = None
        if not future.cancelled() and future.exception() is None:
            self._text, self._built_at = future.result(), self.clock()


async def client_gone(receive: Receive) -> bool:
    """Whether the client of a request whose body was read has hung up already. Costs one
    turn of the loop; a client still there is not disturbed."""
    pending = asyncio.ensure_future(receive())
    await asyncio.sleep(0)
    if pending.done():
        return pending.result().get("type") == "http.disconnect"
    pending.cancel()
    return False


def _error(status: int, error: str, reason: str) -> Response:
    return Response(status, {"error": error, "reason": reason})


def framing_error(method: str, content_lengths: list[str], transfer_encodings: list[str], limit: int) -> Response | None:
    """The answer to a request whose body framing we refuse, or None when it is sound.

    Shared by the ASGI and WSGI adapters: the same request gets the same answer."""
    if transfer_encodings:
        if content_lengths:
            return _error(400, "bad_request", "Content-Length together with Transfer-Encoding")
        if [t.strip().lower() for t in ",".join(transfer_encodings).split(",")] != ["chunked"]:
            return _error(400, "bad_request", "unsupported Transfer-Encoding")
        return None
    if len(content_lengths) > 1:
        return _error(400, "bad_request", "more than one Content-Length")
    if not content_lengths:
        if method in _BODY_METHODS:
            return Response(411, {"error": "length_required", "reason": "Content-Length or chunked body required"})
        return None
    value = content_lengths[0].strip()
    if not (value.isascii() and value.isdigit()):
        return _error(400, "bad_request", "invalid Content-Length")
    if int(value) > limit:
        return Response(413, {"error": "payload_too_large", "limit": limit})
    return None


def local_path(scope: Scope) -> str:
    """The request path below the mount point (Starlette keeps `path` whole and sets
    `root_path`; other routers strip it): ``/healthz`` whichever way we are mounted."""
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def is_health_probe(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and path.rstrip("/") == "/healthz"


def is_metrics_scrape(method: str, path: str) -> bool:
    return method == "GET" and path.rstrip("/") == "/metrics"


def metrics_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    from .metrics import PROMETHEUS_CONTENT_TYPE

    return [(b"content-type", PROMETHEUS_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]


def health_response(health: Health) -> Response:
    result = health()
    status, payload = result if isinstance(result, tuple) else (200, result)
    return Response(status, payload)


def response_headers(response: Response, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in response.all_headers().items()]
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    if 400 <= response.status < 500:
        headers.append((b"connection", b"close"))
    return headers


class Ingest(Protocol):
    """What an event-loop front end needs from a platform's receiver (see the module doc).

    `admit` is `core.receiver.Receiver.admit`: it returns an early `Response` or an
    `Admitted` event, and with ``may_fetch_keys=False`` raises `KeysNeeded` rather than
    block. `accept` stores an admitted event and answers (202, 200, 503); it must not block
    the loop. `record` counts one answer (`Receiver.record`).
    """

    max_body_bytes: int

    def admit(self, request: Request, *, may_fetch_keys: bool = True) -> Any: ...

    async def accept(self, admitted: Any) -> Response: ...

    def record(self, response: Response, started: float) -> None: ...


class ReceiverIngest:
    """`Ingest` over a `core.receiver.Receiver` whose `accept` is synchronous: run inline
    (``offload=False``, for a store that answers in microseconds) or in the loop's default
    thread pool (a store on the network)."""

    def __init__(self, receiver: Any, *, offload: bool = True):
        self.receiver = receiver
        self.max_body_bytes = receiver.settings.max_body_bytes
        self.offload = offload

    def admit(self, request: Request, *, may_fetch_keys: bool = True) -> Any:
        return self.receiver.admit(request, may_fetch_keys=may_fetch_keys)

    async def accept(self, admitted: Any) -> Response:
        if not self.offload:
            return self.receiver.accept(admitted)
        return await asyncio.get_running_loop().run_in_executor(None, self.receiver.accept, admitted)

    def record(self, response: Response, started: float) -> None:
        self.receiver.record_quietly(response, started)


async def answer(ingest: Ingest, request: Request, started: float) -> Response:
    """One request through `ingest`, never blocking the loop; never raises (an unexpected
    error is logged and answered 503 so DT retries). Records the answer."""
    try:
        try:
            result = ingest.admit(request, may_fetch_keys=False)
        except KeysNeeded:  # only this request waits for DT's key server, in a thread
            admit = functools.partial(ingest.admit, request, may_fetch_keys=True)
            result = await asyncio.get_running_loop().run_in_executor(None, admit)
        response = result if isinstance(result, Response) else await ingest.accept(result)
    except Exception:
        log.exception("unexpected error while receiving an event")
        response = Response(503, {"error": "unavailable", "reason": "internal error; retry later"}, {"Retry-After": "5"})
    try:
        ingest.record(response, started)
    except Exception:
        log.exception("could not record ingest metrics")
    return response


class ReceiverASGI:
    """ASGI app around an `Ingest` and ``health`` (for ``/healthz``; a plain function runs
    in a thread, a coroutine function on the loop, so an O(1) one costs no thread hop)."""

    def __init__(self, ingest: Ingest, health: Health, *, metrics: Metrics | None = None,
                 metrics_token: str | None = None):
        self.ingest = ingest
        self.health = health
        self.max_body_bytes = ingest.max_body_bytes
        self.metrics = None if metrics is None else CachedText(metrics)
        self._token = None if metrics_token is None else ("Bearer " + metrics_token).encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        if self.metrics is not None and is_metrics_scrape(scope["method"], local_path(scope)):
            await self._scrape(scope, receive, send)
            return
        response = await self._respond(scope, receive)
        if response is None:  # the client went away: nobody to answer
            return
        body = b"" if scope["method"] == "HEAD" else response.body.encode("utf-8")
        await send({"type": "http.response.start", "status": response.status, "headers": response_headers(response, body)})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        presented = [value for name, value in scope["headers"] if name == b"authorization"]
        return len(presented) == 1 and hmac.compare_digest(presented[0], self._token)

    async def _scrape(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await _read_gone(receive):
            return
        if not self._authorized(scope):
            refused = Response(401, {"error": "unauthorized", "reason": "metrics token required"})
            body = refused.body.encode("utf-8")
            await send({"type": "http.response.start", "status": 401, "headers": response_headers(refused, body)})
            await send({"type": "http.response.body", "body": body})
            return
        assert self.metrics is not None
        text = await self.metrics.get()
        if await client_gone(receive):
            return
        await send({"type": "http.response.start", "status": 200, "headers": metrics_headers(text)})
        await send({"type": "http.response.body", "body": text})

    def _refused(self, response: Response, started: float) -> Response:
        """An answer given here, before the ingest sees the request."""
        try:
            self.ingest.record(response, started)
        except Exception:
            log.exception("could not record ingest metrics")
        return response

    async def _respond(self, scope: Scope, receive: Receive) -> Response | None:
        started = time.perf_counter()
        method = scope["method"]
        headers = Headers.from_asgi(scope["headers"])
        refused = framing_error(method, headers.get_all("content-length"), headers.get_all("transfer-encoding"),
                                self.max_body_bytes)
        if refused is not None:
            return self._refused(refused, started)
        path = local_path(scope)
        if is_health_probe(method, path):
            if await _read_gone(receive):
                return None
            response = await self._health(detailed=self._authorized(scope))
            return None if await client_gone(receive) else response
        body = await self._read_body(receive)
        if body is None:
            return self._refused(Response(413, {"error": "payload_too_large", "limit": self.max_body_bytes}), started)
        if body is _GONE:
            return None
        return await answer(self.ingest, Request(method, body, headers, path), started)

    async def _health(self, detailed: bool = True) -> Response:
        if inspect.iscoroutinefunction(self.health):
            result = await self.health()
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, self.health)
        status, payload = result if isinstance(result, tuple) else (200, result)
        if not detailed:  # counts only for the metrics token's holder
            payload = {"status": payload.get("status", "ok")}
        return Response(status, payload)

    async def _read_body(self, receive: Receive) -> Any:
        """The whole body; None once it passes the limit (a chunked body has no length);
        `_GONE` when the client disconnected first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _read_gone(receive: Receive) -> bool:
    """Read a GET's (empty) body; True when the client hung up instead."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return True
        if not message.get("more_body", False):
            return False


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol (when served alone; a mounted app gets none)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

