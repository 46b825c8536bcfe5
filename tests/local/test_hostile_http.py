"""`dtconnector serve` against hostile HTTP on raw sockets: slow or idle clients, floods of
connections, and request shapes that smuggle or mis-frame a body. Short timeouts are
configured so each test takes seconds."""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from tests.dt import event_body, event_id_of, signed
from tests.http_probes import (
    chunked,
    closed_within,
    exchange,
    open_connections,
    post_head,
    raise_own_fd_limit,
    read_until_closed,
    statuses,
)
from tests.local.conftest import servers
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

FAST = {"DT_HTTP_HEADER_TIMEOUT_S": "0.5", "DT_HTTP_BODY_TIMEOUT_S": "0.5", "DT_HTTP_KEEPALIVE_TIMEOUT_S": "0.5"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server, with short timeouts, for the tests that need nothing else: what each
    checks is what happens to its own connections, and it waits until they are closed."""
    with servers(tmp_path_factory.mktemp("hostile")) as make:
        yield make(**FAST).start()


def _timed_health(port: int) -> float:
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    return time.monotonic() - start


def test_slowloris_headers_are_cut_off_at_the_header_deadline(server):
    with open_connections(server.port, 20, b"POST / HTTP/1.1\r\nHost: x\r\n") as socks:
        for s in socks[:5]:
            s.sendall(b"X-Slow: a")  # a trickle does not extend the deadline
        assert all(closed_within(s, 3.0) for s in socks)


def test_a_connection_that_never_sends_a_byte_is_closed(server):
    with open_connections(server.port, 20) as socks:
        assert all(closed_within(s, 3.0) for s in socks)


def test_stalled_body_gets_408_and_the_connection_is_closed(server):
    with open_connections(server.port, 20, post_head({"Content-Length": "100000"}) + b"{") as socks:
        for s in socks:
            data, closed = read_until_closed(s, 3.0)
            assert closed and statuses(data) == [408]


def test_idle_keep_alive_connection_is_closed_after_its_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = read_until_closed(s, 3.0)
    assert closed and statuses(data) == [200]


def test_healthz_answers_promptly_while_idle_connections_exhaust_the_fd_limit(make_server):
    """1,100 idle connects against ``ulimit -n 1024``, with timeouts far longer than the
    test: only the bound on connections (oldest idle closed first) keeps room for us.
    Without it the probe waits out the 60 s timeouts; 3 s allow for a busy machine."""
    raise_own_fd_limit(4096)
    server = make_server(DT_HTTP_HEADER_TIMEOUT_S="60", DT_HTTP_KEEPALIVE_TIMEOUT_S="60").start(nofile=1024)
    with open_connections(server.port, 1100):
        time.sleep(0.5)  # let the server accept them all
        assert _timed_health(server.port) < 3.0
        body = event_body()
        assert server.request("POST", "/", body, signed(body))[0] == 202


def test_chunked_event_is_decoded_verified_and_handled(server):
    body = event_body(device="dev-chunked")
    head = post_head({**signed(body), "Transfer-Encoding": "chunked"})
    data, _ = exchange(server.port, head + chunked(body, 7) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(data)[:2] == [202, 200], data  # the chunk was the body, not the next request
    wait_until(lambda: event_id_of(body) in server.seen(), what="the chunked event handled")


def test_chunked_body_over_the_limit_is_413_and_closed(make_server):
    server = make_server(DT_MAX_BODY_BYTES="1000", **FAST).start()
    data, closed = exchange(server.port, post_head({"Transfer-Encoding": "chunked"}) + chunked(b"x" * 3000, 500))
    assert statuses(data) == [413] and closed


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Content-Length": "5_17"}, 400),
        ({"Content-Length": "+5"}, 400),
        ({"Content-Length": "5", "Content-length": "6"}, 400),
        ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, 400),
        ({"Transfer-Encoding": "gzip, chunked"}, 400),
    ],
    ids=["underscore", "plus", "duplicate", "cl-and-te", "te-not-chunked"],
)
def test_misframed_requests_are_refused_and_nothing_is_smuggled(server, headers, status):
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = f"POST / HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + b"0\r\n\r\n" + smuggled
    data, closed = exchange(server.port, raw)
    assert statuses(data) == [status]  # one answer: the smuggled GET never ran
    assert closed


def test_post_without_a_length_is_411_and_the_next_request_is_not_run(server):
    data, closed = exchange(server.port, post_head({}) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(data) == [411] and closed


def test_every_4xx_closes_the_connection(server):
    body = event_body()
    raw = post_head({"Content-Length": str(len(body)), "X-Dt-Signature": "nope"}) + body
    data, closed = exchange(server.port, raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(data) == [401] and b"connection: close" in data.lower() and closed


def test_413_from_the_header_closes_the_connection(server):
    data, closed = exchange(server.port, post_head({"Content-Length": "10000000"}))
    assert statuses(data) == [413] and closed


def test_a_request_head_over_64_kib_is_431_and_closed(server):
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
    data, closed = exchange(server.port, b"POST / HTTP/1.1\r\nHost: x\r\n" + headers)
    assert statuses(data) == [431] and closed
