"""What anyone who reaches `dtconnector serve` can do to it without a valid signature, and
that none of it delays DT's deliveries (issues 22 and 26):

- clients sending `DT-Asymmetric-Signature` tokens with unknown key ids against a key
  server that takes 1.5 s per answer;
- fire-and-forget ``/healthz`` requests while hundreds of large dead letters are stored;
- signed events whose ``eventType`` is ~256 KiB (metric labels), and scrape-and-close
  clients of ``/metrics``;
- ``DT_METRICS_TOKEN``: ``/metrics`` and ``/healthz``'s counts only for its holder.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.dt import event_body, event_id_of, signed
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

#: DT's target is 10 s; these answers need no I/O but one SQLite commit. The assertion
#: is the issue's 100 ms, a wide margin over the few ms they take on an idle machine.
PROMPT_S = 0.1
#: After a flood of hostile requests: answered, not stalled (before the fix: 32.9 s, and
#: minutes for /healthz behind the scrapers); wide, as the suite runs four workers on two cores.
UNSTALLED_S = 2.0


def _timed(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = server.request(method, path, body, headers)
    return status, time.perf_counter() - started


def test_unknown_key_ids_against_a_slow_key_server_never_delay_genuine_deliveries(make_server):
    pytest.importorskip("cryptography")
    from emulator.jwks import JwksServer, generate_private_key_pem, key_id
    from emulator.signing import sign_asymmetric

    published = generate_private_key_pem()
    with JwksServer([(key_id(published), published)], delay_s=1.5) as jwks:
        server = make_server(DT_SIGNATURE_MODE="either", DT_JWKS_ISSUER=jwks.issuer,
                             DT_KEY_FETCH_TIMEOUT_S="2").start()
        stop = threading.Event()
        forged_statuses: list[int] = []
        stranger = generate_private_key_pem()

        def forge(n: int) -> None:
            while not stop.is_set():
                body = event_body(device=f"dev-forged-{n}")
                token = sign_asymmetric(body, stranger, kid=f"unknown-{n}-{time.monotonic_ns()}", issuer=jwks.issuer)
                try:
                    forged_statuses.append(server.request("POST", "/", body, {"DT-Asymmetric-Signature": token})[0])
                except (OSError, http.client.HTTPException):
                    pass

        attackers = [threading.Thread(target=forge, args=(n,)) for n in range(4)]
        for t in attackers:
            t.start()
        try:
            wait_until(lambda: jwks.requests >= 2, what="the key server being asked")
            waits = []
            for i in range(20):
                body = event_body(device=f"dev-genuine-{i}")
                status, took = _timed(server, "POST", "/", body, signed(body))
                assert status == 202
                waits.append(took)
                status, took = _timed(server, "GET", "/healthz")
                assert status == 200
                waits.append(took)
            assert jwks.requests >= 2, "the attackers kept the key server busy meanwhile"
        finally:
            stop.set()
            for t in attackers:
                t.join(30)
        # A loop blocked by a fetch holds every answer for up to the key server's 1.5 s. All but
        # two of the 40 answers within 100 ms, and none near a fetch: `make test` runs four
        # workers on two cores, where one answer in 40 was once seen at 108 ms (scheduling).
        assert sum(wait >= PROMPT_S for wait in waits) <= 2, sorted(waits)[-5:]
        assert max(waits) < 0.5, sorted(waits)[-5:]
        assert set(forged_statuses) <= {401, 503}


def _store_dead_letters(db_path: Path, count: int, size: int) -> None:
    """`count` dead letters of `size` bytes each, as a broken handler would leave them."""
    from local_receiver.sqlite_store import Database

    db = Database(db_path)
    try:
        padding = "x" * size
        with db.transaction() as conn:
            for i in range(count):
                conn.execute(
                    "INSERT INTO dead_letters (event_id, body, attempts, error, dead_at) VALUES (?, ?, 5, ?, ?)",
                    (f"dead-{i}", padding, "HandlerFailed: handler h failed", time.time()),
                )
    finally:
        db.close()


def test_fire_and_forget_healthz_with_many_large_dead_letters_never_delays_a_delivery(make_server, tmp_path):
    """Issue 26, finding 1: 400 dead letters of 240 KiB; 100 /healthz requests whose
    clients hang up at once; a signed POST is still answered promptly (it waited 32.9 s)."""
    server = make_server()
    _store_dead_letters(server.workdir / "events.db", 400, 240 * 1024)
    server.start()
    assert server.request("GET", "/healthz")[1]["deadLetters"] == 400
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    body = event_body(device="dev-prompt")
    status, took = _timed(server, "POST", "/", body, signed(body))
    assert status == 202 and took < UNSTALLED_S, took
    status, took = _timed(server, "GET", "/healthz")
    assert status == 200 and took < UNSTALLED_S, took


def _scrape(port: int, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _close_wait(port: int) -> int:
    """Sockets of the server's port in CLOSE-WAIT (the client closed, the server has not)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                count += 1
    return count


def test_metrics_stay_small_whatever_event_types_arrive_and_scrapers_leave_no_close_wait(make_server):
    """Issue 26, finding 2: ten signed events whose eventType is ~256 KiB made /metrics
    89.6 MB; scrape-and-close clients left 1,865 CLOSE-WAIT sockets."""
    server = make_server().start()
    for i in range(10):
        event = json.loads(event_body(device=f"dev-{i}"))
        event["event"]["eventType"] = ("t%d" % i) * (250 * 1024 // 2)  # ~250 KiB, a new type each
        event["event"]["data"] = {}
        huge = json.dumps(event).encode()
        assert len(huge) < 256 * 1024
        assert server.request("POST", "/", huge, signed(huge))[0] == 202
    wait_until(lambda: len(server.seen()) == 10, what="the 10 events handled")
    wait_until(lambda: b'eventType="other"} 10' in _scrape(server.port)[1], what="the worker's counters")
    status, text = _scrape(server.port)
    assert status == 200 and len(text) < 64 * 1024, len(text)

    def scrape_and_close(n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")

    scrapers = [threading.Thread(target=scrape_and_close, args=(300,)) for _ in range(3)]
    for t in scrapers:
        t.start()
    for t in scrapers:
        t.join(60)
    wait_until(lambda: _close_wait(server.port) <= 5, timeout=10, what="no CLOSE-WAIT left")
    status, took = _timed(server, "GET", "/healthz")
    assert status == 200 and took < UNSTALLED_S


def test_a_metrics_token_guards_metrics_and_the_health_counts(make_server):
    server = make_server(DT_METRICS_TOKEN="t0ken-for-scrapers").start()
    assert _scrape(server.port)[0] == 401
    assert _scrape(server.port, {"Authorization": "Bearer wrong"})[0] == 401
    status, text = _scrape(server.port, {"Authorization": "Bearer t0ken-for-scrapers"})
    assert status == 200 and b"dt_requests_total" in text or b"# TYPE dt_requests_total" in text
    assert server.request("GET", "/healthz") == (200, {"status": "ok"})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/healthz", headers={"Authorization": "Bearer t0ken-for-scrapers"})
    assert json.loads(conn.getresponse().read()) == {"status": "ok", "queued": 0, "deadLetters": 0}
    conn.close()
    body = event_body()
    assert server.request("POST", "/", body, signed(body))[0] == 202  # DT needs no token
    stats = subprocess.run(
        [sys.executable, "-m", "dtconnector", "stats", "--url", f"http://127.0.0.1:{server.port}/"],
        env=server.env, capture_output=True, text=True, timeout=30,
    )
    assert stats.returncode == 0, stats.stderr
    assert "requests answered" in stats.stdout
    assert event_id_of(body)
