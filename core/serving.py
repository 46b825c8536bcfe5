"""Production HTTP for the long-running receivers (`dtconnector serve`, the Heroku web
dyno): uvicorn (httptools parser, uvloop) plus the few limits uvicorn does not enforce.

Imported only by those two entry points, never by the rest of core or a serverless entry
point, so no cold start pays for uvicorn (a dependency of the project in pyproject.toml,
installed by `pip install dtconnector` and the Heroku bundle, not required by the serverless ones).

uvicorn gives strict HTTP/1.1 framing (llhttp refuses ``Content-Length`` with
``Transfer-Encoding``, duplicate lengths, ``5_17``; chunked bodies are decoded) and an idle
keep-alive timeout. It has no header read timeout, no body read timeout, and no timeout
for a connection that never sends a byte, and its ``limit_concurrency`` answers 503 to
everybody once idle sockets fill it. `GuardedProtocol` adds, per connection:

- a header deadline from the moment a connection opens or a request's first byte
  arrives, until its headers end (slowloris, zero-byte connects);
- a body deadline from the end of the headers until the body is complete (a stalled
  body): 408, and the connection is closed;
- a bound on open connections below the process's file-descriptor limit: over it, the
  oldest connection that has no request being handled is closed to make room, so 1,000
  idle sockets cannot keep ``/healthz`` or DT's POST waiting;
- a 64 KiB cap on a request's head (request line and headers; llhttp has none), whatever
  the write pattern: counted across socket reads while a head is incomplete, and per
  header as the parser hands them over, so a whole oversized head arriving in one read (with
  its body, or with the requests pipelined before it) is refused too: 431, and the request
  never reaches the app. The refusal half-closes the connection and discards what the
  client still sends for a moment, so a client busy writing its head reads the 431 rather
  than a reset;
- one write per response: uvicorn writes a response's head and body separately (two
  system calls, each paying for the TCP path on the way), so a request's transport gathers
  what the app sends during one turn of the event loop and hands it to the socket at once.

The uvicorn internals used here (HttpToolsProtocol's callbacks and attributes, the parser
error path through ``send_400_response``) are checked by tests/core/test_serving.py, and
uvicorn's version is bounded in pyproject.toml and every bundle that installs it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import ConfigError, number_setting

_MAX_HEAD_BYTES = 64 * 1024  # request line + headers; DT's are under 2 KiB. llhttp has no cap
_HEADER_OVERHEAD = 4  # ": " and CRLF around each header the parser hands over
_LINGER_S = 2.0  # how long a refused connection's incoming bytes are read and dropped
_FD_RESERVE = 48  # descriptors kept for SQLite, logs, the listening socket, the worker


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_connections: int = 1000
    threads: int = 16  # the loop's thread pool: DT key fetches, a synchronous store's accept (`core.asgi.ReceiverIngest`)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Limits":
        """From DT_HTTP_* variables (read once at start, never from a request). A malformed
        or zero value is a `ConfigError` naming the variable, never a traceback."""
        env = os.environ if env is None else env
        limits = cls(
            header_timeout_s=number_setting(env, "DT_HTTP_HEADER_TIMEOUT_S", cls.header_timeout_s),
            body_timeout_s=number_setting(env, "DT_HTTP_BODY_TIMEOUT_S", cls.body_timeout_s),
            keepalive_timeout_s=number_setting(env, "DT_HTTP_KEEPALIVE_TIMEOUT_S", cls.keepalive_timeout_s),
            max_connections=int(number_setting(env, "DT_HTTP_MAX_CONNECTIONS", cls.max_connections)),
            threads=int(number_setting(env, "DT_HTTP_THREADS", cls.threads)),
        )
        for name, value in (("DT_HTTP_HEADER_TIMEOUT_S", limits.header_timeout_s),
                            ("DT_HTTP_BODY_TIMEOUT_S", limits.body_timeout_s),
                            ("DT_HTTP_KEEPALIVE_TIMEOUT_S", limits.keepalive_timeout_s),
                            ("DT_HTTP_MAX_CONNECTIONS", limits.max_connections),
                            ("DT_HTTP_THREADS", limits.threads)):
            if value <= 0:
                raise ConfigError(f"{name} must be more than 0")
        return limits

    def connection_bound(self) -> int:
        """`max_connections`, lowered to fit the file-descriptor limit (``ulimit -n``)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - _FD_RESERVE))


_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 55\r\n"
    b'connection: close\r\n\r\n{"error":"request_timeout","reason":"request too slow"}'
)

_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 65\r\n"
    b'connection: close\r\n\r\n{"error":"headers_too_large","reason":"request head over 64 KiB"}'
)


class _Gathered:
    """The transport as a request's response cycle sees it: writes made during one turn of
    the event loop go to the socket as one (the head and body of a response, sent back to
    back). Everything else is the real transport's. The connection flushes it before any
    write of its own, so answers keep their order."""

    __slots__ = ("_transport", "_loop", "_chunks")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self.flush)
        self._chunks.append(data)

    def flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines, a head cap and a
    connection bound."""

    limits: Limits = Limits()
    bound: int = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._opened = time.monotonic()
        self._reading_head = True  # bytes now belong to a request line or headers
        self._head_bytes = 0  # raw bytes read while this head is incomplete
        self._parsed_head_bytes = 0  # URL and headers the parser handed over for this request
        self._refused = False  # answered 431: what still arrives is dropped
        super().connection_made(transport)
        self._gathered = _Gathered(transport, self.loop)
        self._arm(self.limits.header_timeout_s)  # a connect that never sends a byte
        if len(self.connections) > self.bound:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._gathered.flush()  # answers already given go out before anything this may write
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)  # a HeadTooLarge from a callback ends in send_400_response
        # Still inside the head after this chunk (so none of it was body): cap its size.
        if self._reading_head and self._head_bytes > _MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse_head()

    def on_message_begin(self) -> None:
        self._parsed_head_bytes = 0
        super().on_message_begin()
        self._arm(self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + _HEADER_OVERHEAD)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        """Within one read the parser may take a whole head (and more): count what it hands
        over and stop it (llhttp aborts on a callback's exception) once over the cap."""
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > _MAX_HEAD_BYTES:
            raise HeadTooLarge()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when the error was `HeadTooLarge`."""
        if self._parsed_head_bytes > _MAX_HEAD_BYTES:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        """Stop reading this connection and answer 431, after the answers still owed to
        the requests pipelined before this one (`on_response_complete`)."""
        self._refused = True
        self._disarm()
        if self.cycle is None or self.cycle.response_complete:
            self._answer_head_too_large()

    def _answer_head_too_large(self) -> None:
        """431, then a lingering close: half-close so the client sees the answer and EOF,
        drop whatever it still sends, and close for good after `_LINGER_S` (closing at once
        with its bytes unread would make the kernel reset the connection, and the client
        would lose the answer)."""
        self._gathered.flush()
        self.transport.write(_HEAD_TOO_LARGE)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._disarm()
        self._deadline = self.loop.call_later(_LINGER_S, self.transport.close)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()
        if self.cycle is not None:  # the request's task has not run yet: it writes gathered
            self.cycle.transport = self._gathered
        self._arm(self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_head, self._head_bytes = True, 0  # what follows is the next request
        super().on_message_complete()

    def shutdown(self) -> None:
        self._gathered.flush()  # an answer given this turn goes out before the server closes us
        super().shutdown()

    def on_response_complete(self) -> None:
        self._opened = time.monotonic()  # idle from now on: evictable, oldest first
        super().on_response_complete()
        if self._refused and not self.pipeline and self.cycle.response_complete and not self.transport.is_closing():
            self._answer_head_too_large()  # every request before the oversized one is answered

    # -- deadlines ----------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        self._gathered.flush()
        if cycle is None or not cycle.response_started:
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    # -- the connection bound ----------------------------------------------------------

    def _busy(self) -> bool:
        """A request of this connection is being handled (not merely being read)."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.more_body

    def _make_room(self) -> None:
        excess = len(self.connections) - self.bound
        idle = sorted(
            (c for c in self.connections if c is not self and isinstance(c, GuardedProtocol) and not c._busy()),
            key=lambda c: c._opened,
        )
        for victim in idle[:excess]:
            victim.connections.discard(victim)
            victim._gathered.flush()
            victim.transport.close()
        if len(self.connections) > self.bound:  # every other connection is mid-request
            self.connections.discard(self)
            self.transport.close()


def protocol_for(limits: Limits) -> type[GuardedProtocol]:
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "bound": limits.connection_bound()})


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal handling: `serve` stops it on SIGTERM/SIGINT
    and returns, so the caller can stop the worker and exit 0."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before serving so the real port (for --port 0) is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connects queue from now on, before the server loop starts
    sock.set_inheritable(True)
    return sock


def server(app, limits: Limits) -> uvicorn.Server:
    """uvicorn's server for the ASGI `app` with `GuardedProtocol` and our settings, not yet
    serving (`serve` runs it; tests run it on a thread of their own)."""
    config = uvicorn.Config(
        app,
        http=protocol_for(limits),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]  # call_later takes floats
        backlog=2048,
        server_header=False,
        proxy_headers=False,  # we never use the client address: skip the middleware
        date_header=False,
    )
    return _Server(config)


def serve(app, sock: socket.socket, limits: Limits) -> None:
    """Serve the ASGI `app` on `sock` until SIGTERM/SIGINT."""
    import signal

    running = server(app, limits)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(limits.threads, thread_name_prefix="dtconnector-http"))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: setattr(running, "should_exit", True))
        await running.serve(sockets=[sock])

    run(main())


def run(main) -> None:
    """Run the coroutine `main` to completion on uvloop when it is installed, else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
