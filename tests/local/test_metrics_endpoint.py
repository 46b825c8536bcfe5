"""`dtconnector serve`'s ``GET /metrics`` (parsed with prometheus_client's parser) and
`dtconnector stats`, over real HTTP on loopback."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys

import pytest

from core.metrics import DEAD_LETTERED, EVENTS_PROCESSED, QUEUE_BACKLOG, REQUESTS
from tests.dt import event_body, signed
from tests.metrics_native import key, parse_prometheus
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _metrics_text(server) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def _backlog(text: str) -> tuple[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    [family] = [f for f in text_string_to_metric_families(text) if f.name == QUEUE_BACKLOG]
    return family.type, family.samples[0].value


def test_metrics_endpoint_counts_what_the_server_answered(make_server):
    server = make_server().start()
    good, failing = event_body(), event_body(labels={"fail": "always"})
    assert server.request("POST", "/", good, signed(good))[0] == 202
    assert server.request("POST", "/", good, signed(good))[0] == 200
    assert server.request("POST", "/", failing, signed(failing))[0] == 202
    assert server.request("POST", "/", good, {"X-Dt-Signature": "nope"})[0] == 401
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:  # refused before reading
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")

    def settled():
        # The worker counts a dead letter before the commit that ends its batch empties the
        # queue, and /metrics is cached for a second: wait for all three to be true together.
        text = _metrics_text(server)[2]
        got = parse_prometheus(text)
        return (got[key(DEAD_LETTERED)] == 1 and got[key(EVENTS_PROCESSED, eventType="temperature")] == 1
                and _backlog(text) == ("gauge", 0))

    wait_until(settled, what="one event processed, one dead-lettered and the queue empty")
    status, content_type, text = _metrics_text(server)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    got = parse_prometheus(text)
    requests = {dict(dims)["status"] + " " + dict(dims)["reason"]: v for (name, dims), v in got.items() if name == REQUESTS}
    assert requests == {"202 accepted": 2, "200 duplicate": 1, "401 token is malformed": 1, "413 payload_too_large": 1}
    assert _backlog(text) == ("gauge", 0)

    summary = subprocess.run(
        [sys.executable, "-m", "dtconnector", "stats", "--url", f"http://127.0.0.1:{server.port}/"],
        env=server.env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    lines = [line.split() for line in summary.splitlines()]
    assert ["requests", "answered", "5"] in lines
    assert ["202", "accepted:", "2"] in lines
    assert ["401", "token", "is", "malformed:", "1"] in lines
    assert ["dead-lettered", "1"] in lines
    assert ["events", "processed", "1"] in lines
    assert ["queue", "backlog", "0"] in lines
    assert server.stop() == 0


def test_stats_says_clearly_when_no_receiver_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        result = subprocess.run(
            [sys.executable, "-m", "dtconnector", "stats", "--url", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert "is `dtconnector serve` running?" in result.stderr


def test_the_workers_counters_survive_its_restart(make_server):
    """The worker process stores its counters with its commits; the web process's
    /metrics merges them, and a restarted worker continues from them."""
    import os
    import signal

    server = make_server().start()
    for i in range(3):
        body = event_body(device=f"dev-{i}")
        assert server.request("POST", "/", body, signed(body))[0] == 202
    processed = key(EVENTS_PROCESSED, eventType="temperature")
    wait_until(lambda: parse_prometheus(_metrics_text(server)[2]).get(processed) == 3, what="3 processed")
    worker = server.children()["worker"]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: any("running again" in line for line in server.stderr), what="the worker restarted")
    body = event_body(device="dev-after")
    assert server.request("POST", "/", body, signed(body))[0] == 202
    wait_until(lambda: parse_prometheus(_metrics_text(server)[2]).get(processed) == 4, what="4 processed")
