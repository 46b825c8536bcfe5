"""`core.serving`: the request-head cap holds for any write pattern, and the uvicorn internals
`GuardedProtocol` extends are where it expects them (a uvicorn release that moves them must
fail here, loudly, before it reaches a deploy).

The server is the production one (`core.serving.server`: uvicorn, httptools, GuardedProtocol)
on a thread of this process, in front of a tiny ASGI app that counts what reaches it."""

from __future__ import annotations

import inspect
import socket
import threading
import time

import pytest

from core.serving import Limits, bind, run, server
from tests.http_probes import read_until_closed, statuses

CAP = 64 * 1024


class Counting:
    """An ASGI app answering 200 with the size of the head it was given."""

    def __init__(self):
        self.requests = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.requests += 1
        while (await receive()).get("more_body"):
            pass
        size = sum(len(k) + len(v) for k, v in scope["headers"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0"),
                                                                              (b"x-head", str(size).encode())]})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def served():
    app = Counting()
    sock = bind("127.0.0.1", 0)
    running = server(app, Limits(header_timeout_s=5, body_timeout_s=5, keepalive_timeout_s=5))
    thread = threading.Thread(target=run, args=(running.serve(sockets=[sock]),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1], app
    running.should_exit = True
    thread.join(10)


def _head(size: int, *, headers: int = 1, body: bytes = b"") -> bytes:
    """A POST head of about `size` bytes spread over `headers` X-Pad headers."""
    start = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
    each = max(1, (size - len(start)) // headers - len(b"X-Pad-00000: \r\n"))
    pads = b"".join(b"X-Pad-%05d: %s\r\n" % (i, b"a" * each) for i in range(headers))
    return start + pads + b"\r\n" + body


def _send(port: int, *parts: bytes) -> tuple[bytes, bool]:
    """Send `parts` as separate writes (TCP_NODELAY: each leaves as its own segments), then
    read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in parts:
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused mid-way: what was answered is still readable
        return read_until_closed(s, 5.0)


def _refused(port: int, app: Counting, *parts: bytes) -> None:
    before = app.requests
    data, closed = _send(port, *parts)
    assert statuses(data) == [431] and closed, data[:200]
    assert b"request head over 64 KiB" in data
    assert app.requests == before  # the app never saw it


def test_a_head_under_the_cap_is_served(served):
    port, app = served
    data, _ = _send(port, _head(60 * 1024, headers=40).replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
    assert statuses(data) == [200]


def test_a_120_kib_head_in_one_write_is_431(served):
    _refused(*served, _head(120 * 1024))


def test_a_120_kib_head_of_many_headers_in_one_write_is_431(served):
    _refused(*served, _head(120 * 1024, headers=2000))


def test_a_head_with_its_body_in_one_write_is_431(served):
    _refused(*served, _head(120 * 1024, headers=30, body=b"{}"))


def test_a_head_in_many_small_writes_is_431(served):
    whole = _head(120 * 1024, headers=100)
    _refused(*served, *(whole[i : i + 1000] for i in range(0, len(whole), 1000)))


@pytest.mark.parametrize("cut", [-4, -3, -2, -1, 0])
def test_a_head_split_around_the_header_body_boundary_is_431(served, cut):
    whole = _head(120 * 1024, headers=30, body=b'{"a":1}')
    end = whole.index(b"\r\n\r\n") + 4 + cut
    _refused(*served, whole[:end], whole[end:])


def test_the_cap_is_per_request_not_per_connection(served):
    """A pipelined small request, then an oversized one, in one write: the first is
    answered, the second refused."""
    port, app = served
    small = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed = _send(port, small + _head(120 * 1024, headers=10))
    assert statuses(data) == [200, 431] and closed


def test_many_heads_under_the_cap_on_one_connection_are_all_served(served):
    port, _ = served
    one = _head(40 * 1024, headers=20)
    data, _ = _send(port, one * 4 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(data) == [200] * 5


def test_a_client_still_sending_a_huge_head_reads_the_431(served):
    """The refusal is readable although the client keeps writing a 1 MiB header: the
    server half-closes and discards the rest instead of resetting the connection."""
    port, app = served
    for _ in range(3):
        _refused(port, app, b"POST / HTTP/1.1\r\nHost: x\r\nX-Dt-Signature: " + b"a" * 1_000_000 + b"\r\n\r\n")


# -- the uvicorn internals GuardedProtocol relies on ---------------------------------------


def test_uvicorn_is_in_the_tested_range():
    """The installed uvicorn is inside the range pyproject.toml declares, and that range
    has an upper bound (tests/heroku/test_bundle.py checks the bundle declares the same)."""
    import uvicorn
    from packaging.specifiers import SpecifierSet

    from tests.pyproject import pyproject

    [spec] = [d for d in pyproject()["project"]["dependencies"] if d.startswith("uvicorn")]
    declared = SpecifierSet(spec[len("uvicorn"):])
    assert any(s.operator in ("<", "<=") for s in declared), f"{spec}: no upper bound"
    assert uvicorn.__version__ in declared, (
        f"uvicorn {uvicorn.__version__} is outside {spec}, the range core/serving.py was tested with: run"
        " tests/core/test_serving.py and the hostile suites on it, then move the bound in pyproject.toml and"
        " heroku/bundle/requirements.txt"
    )


def test_the_uvicorn_internals_guarded_protocol_uses_are_there():
    """Every name `core.serving` overrides or reads on uvicorn's classes, with the
    signature it calls them with. A rename upstream fails here with its name."""
    import uvicorn
    from uvicorn.protocols.http import httptools_impl

    protocol = httptools_impl.HttpToolsProtocol
    for name, params in {
        "connection_made": ["self", "transport"],
        "connection_lost": ["self", "exc"],
        "data_received": ["self", "data"],
        "eof_received": ["self"],
        "on_message_begin": ["self"],
        "on_url": ["self", "url"],
        "on_header": ["self", "name", "value"],
        "on_headers_complete": ["self"],
        "on_message_complete": ["self"],
        "on_response_complete": ["self"],
        "send_400_response": ["self", "msg"],
        "shutdown": ["self"],
    }.items():
        method = getattr(protocol, name, None)
        assert callable(method), f"uvicorn's HttpToolsProtocol.{name} is gone"
        assert list(inspect.signature(method).parameters) == params, f"HttpToolsProtocol.{name} changed"
    source = inspect.getsource(protocol)
    for attribute in ("self.connections", "self.transport", "self.cycle", "self.loop", "self.parser", "self.pipeline"):
        assert attribute + " =" in source or attribute + ":" in source, f"HttpToolsProtocol no longer sets {attribute}"
    assert "self.cycle = RequestResponseCycle(" in inspect.getsource(protocol.on_headers_complete), (
        "HttpToolsProtocol.on_headers_complete no longer builds the request's cycle"
    )
    assert "self.send_400_response(" in inspect.getsource(protocol.data_received), (
        "HttpToolsProtocol.data_received no longer answers a parser error through send_400_response"
    )
    cycle = inspect.getsource(httptools_impl.RequestResponseCycle)
    for attribute in ("response_started", "response_complete", "more_body", "transport"):
        assert f"self.{attribute} =" in cycle, f"RequestResponseCycle.{attribute} is gone"
    assert callable(getattr(uvicorn.Server, "capture_signals", None))
    assert "sockets" in inspect.signature(uvicorn.Server.serve).parameters
    config = inspect.signature(uvicorn.Config).parameters
    for option in ("http", "lifespan", "access_log", "timeout_keep_alive", "backlog", "server_header",
                   "proxy_headers", "date_header"):
        assert option in config, f"uvicorn.Config no longer takes {option}"


def test_the_guarded_protocol_is_the_one_uvicorn_runs(served):
    """Behaviour, not names: the connection uvicorn builds is a GuardedProtocol (a 431 comes
    only from it: uvicorn itself has no head cap), and its state machine sees the head end."""
    from core.serving import GuardedProtocol, protocol_for

    assert issubclass(protocol_for(Limits()), GuardedProtocol)
    port, app = served
    _refused(port, app, _head(70 * 1024))


def test_a_parser_error_that_is_not_ours_is_still_uvicorns_400(served):
    port, app = served
    data, closed = _send(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert statuses(data) == [400] and closed


def test_a_response_is_one_write_and_answers_keep_their_order():
    """Head and body reach the socket in one write; pipelined answers stay in order and a
    431 after them comes last (the gathered writes are flushed before the connection's own)."""
    import uvicorn

    from core.serving import GuardedProtocol, protocol_for

    writes: list[bytes] = []

    class Recording:
        """The socket's transport, noting each write."""

        def __init__(self, transport):
            self._transport = transport

        def write(self, data):
            writes.append(bytes(data))
            self._transport.write(data)

        def __getattr__(self, name):
            return getattr(self._transport, name)

    class Counted(protocol_for(Limits())):
        def connection_made(self, transport):
            super().connection_made(Recording(transport))

    app = Counting()
    sock = bind("127.0.0.1", 0)
    running = uvicorn.Server(uvicorn.Config(app, http=Counted, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=run, args=(running.serve(sockets=[sock]),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        port = sock.getsockname()[1]
        one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        data, closed = _send(port, one * 3 + _head(120 * 1024))
        assert statuses(data) == [200, 200, 200, 431] and closed
        assert [w[:12] for w in writes] == [b"HTTP/1.1 200"] * 3 + [b"HTTP/1.1 431"]
        assert all(w.endswith(b"\r\n\r\n") for w in writes[:3])  # each whole: head and (empty) body
        assert issubclass(Counted, GuardedProtocol)
    finally:
        running.should_exit = True
        thread.join(10)
