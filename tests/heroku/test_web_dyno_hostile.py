"""The web dyno, started with the Procfile's own command, against clients that try to
starve it: slow headers, stalled bodies, idle connects, sockets never closed after
``Connection: close``. A genuine POST must still be answered at once."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import time

import pytest

from tests.dt import event_body, signed
from tests.heroku.test_processes import bundle, dyno_env, healthy, procfile, stop  # noqa: F401 (fixture)
from tests.http_probes import exchange, open_connections, post_head, raise_own_fd_limit, read_until_closed, statuses
from tests.platforms.heroku import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# Starved, the old web process answered after 10-20 s; a shared, loaded test machine can
# add a few hundred ms to any answer.
POST_DEADLINE_S = 2.0
PROMPT_S = 3.0  # against the 60 s a client would wait without the bound
FAST = {"DT_HTTP_HEADER_TIMEOUT_S": "2", "DT_HTTP_BODY_TIMEOUT_S": "2", "DT_HTTP_KEEPALIVE_TIMEOUT_S": "2"}


@contextlib.contextmanager
def web_dyno(h, bundle, shell_prefix: str = "", **env):  # noqa: F811
    port = free_port()
    command = procfile(bundle)["web"].replace("0.0.0.0", "127.0.0.1")
    proc = subprocess.Popen(["bash", "-c", shell_prefix + "exec " + command], cwd=bundle,
                            env=dyno_env(h, PORT=str(port), **{**FAST, **env}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: healthy(port), 30, "the web dyno to answer /healthz", proc=proc)
        yield port
    finally:
        stop(proc)


@pytest.fixture
def web(h, bundle):  # noqa: F811
    with web_dyno(h, bundle) as port:
        yield port


def _timed_post(port: int) -> tuple[int, float]:
    body = event_body()
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("POST", "/", body=body, headers=signed(body))
        status = conn.getresponse().status
    finally:
        conn.close()
    return status, time.monotonic() - start


def test_slow_and_idle_clients_do_not_delay_a_post(web):
    slow_headers = b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: "
    stalled_body = post_head({"Content-Length": "100000"}) + b"{"
    with open_connections(web, 8, slow_headers), open_connections(web, 8, stalled_body), open_connections(web, 50):
        time.sleep(0.2)
        status, seconds = _timed_post(web)
    assert status == 202 and seconds < POST_DEADLINE_S, seconds


def test_clients_that_never_close_after_connection_close_do_not_delay_a_post(web):
    socks = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", web), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            socks.append(s)  # read nothing, close nothing
        status, seconds = _timed_post(web)
        assert status == 202 and seconds < POST_DEADLINE_S, seconds
    finally:
        for s in socks:
            s.close()


def test_a_413_closes_the_connection(web):
    data, closed = exchange(web, post_head({"Content-Length": "10000000"}))
    assert statuses(data) == [413] and closed


def test_slow_clients_are_cut_off(web):
    with open_connections(web, 5, b"POST / HTTP/1.1\r\nHost: x\r\n") as socks:
        assert all(read_until_closed(s, 5.0)[1] for s in socks)


def test_healthz_and_a_post_answer_promptly_while_idle_connections_exhaust_the_fd_limit(h, bundle):  # noqa: F811
    """Without the connection bound the probe is never accepted (no descriptor left) and
    waits out the 60 s timeouts; the bound leaves room at once. The 3 s allow for a
    machine busy with the suite's other workers (1.3 s seen)."""
    raise_own_fd_limit(4096)
    slow = {"DT_HTTP_HEADER_TIMEOUT_S": "60", "DT_HTTP_KEEPALIVE_TIMEOUT_S": "60"}
    with web_dyno(h, bundle, "ulimit -n 1024; ", **slow) as port, open_connections(port, 1100):
        time.sleep(0.5)
        start = time.monotonic()
        assert healthy(port)
        assert time.monotonic() - start < PROMPT_S
        status, seconds = _timed_post(port)
        assert status == 202 and seconds < POST_DEADLINE_S, seconds
