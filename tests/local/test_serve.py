"""`dtconnector serve` end to end over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from tests.dt import event_body, event_id_of, signed
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def test_events_are_received_handled_and_stored(make_server):
    server = make_server().start()
    bodies = [event_body("temperature", device="dev-a", timestamp=f"2026-11-22T10:00:0{i}Z") for i in range(3)]
    for body in bodies:
        assert server.request("POST", "/", body, signed(body))[0] == 202
    assert server.request("POST", "/", bodies[0], signed(bodies[0])) == (200, {"status": "duplicate", "eventId": event_id_of(bodies[0])})
    wait_until(lambda: len(server.seen()) == 3, what="3 handled events")
    # The counts are re-read every 0.1 s: the acknowledgements (after the handlers) show soon.
    wait_until(lambda: server.request("GET", "/healthz") == (200, {"status": "ok", "queued": 0, "deadLetters": 0}),
                      what="an empty queue in /healthz")
    state = json.loads(server.cli("state", "--device", "dev-a"))
    assert state["dev-a"]["temperature"]["eventId"] == event_id_of(bodies[2])
    assert server.stop() == 0


def test_http_level_statuses(make_server):
    server = make_server().start()
    body = event_body()
    assert server.request("GET", "/")[0] == 405
    assert server.request("PUT", "/x", body, signed(body))[0] == 405
    assert server.request("POST", "/", b"{", signed(b"{"))[0] == 400
    assert server.request("POST", "/", body, {"X-Dt-Signature": "nope"})[0] == 401
    assert server.request("POST", "/any/path/at/all", body, signed(body))[0] == 202


def test_oversized_body_is_refused_from_content_length_before_reading(make_server):
    server = make_server().start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Claims 10 MB but sends nothing more: the answer must not wait for the body.
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")


def test_dead_letters_are_listed_and_can_be_requeued(make_server):
    server = make_server().start()
    body = event_body(labels={"fail": "always"})
    assert server.request("POST", "/", body, signed(body))[0] == 202
    wait_until(lambda: server.request("GET", "/healthz")[1]["deadLetters"] == 1, what="a dead letter")
    [entry] = [json.loads(line) for line in server.cli("dead-letters", "--json").splitlines()]
    assert entry["eventId"] == event_id_of(body) and entry["attempts"] == 3
    assert entry["error"].startswith("HandlerFailed: handler e2e_handlers.record failed")
    assert (entry["exceptionType"], entry["exceptionMessage"]) == ("RuntimeError", "this event always fails")
    assert server.cli("dead-letters", "--requeue").strip() == "requeued 1 dead-lettered events"
    wait_until(lambda: server.request("GET", "/healthz")[1]["deadLetters"] == 1, what="dead again")


def test_second_server_on_the_same_database_refuses_to_start(make_server):
    make_server().start()
    with pytest.raises(RuntimeError, match="already serving"):
        make_server().start()


def test_no_acknowledged_event_is_lost_across_kill_9(make_server):
    """Events are acknowledged while the worker lags behind (a slow handler); the process is
    killed with SIGKILL; after a restart every acknowledged event is handled."""
    server = make_server(E2E_HANDLER_DELAY_S="0.02").start()
    bodies = [event_body(device=f"dev-{i % 5}", timestamp=f"2026-11-22T10:{i // 60:02d}:{i % 60:02d}Z") for i in range(150)]
    acked: list[str] = []
    lock = threading.Lock()

    def send(chunk):
        for body in chunk:
            try:
                status, _ = server.request("POST", "/", body, signed(body))
            except (OSError, http.client.HTTPException):
                continue  # the server is gone, mid-answer or before; DT would retry later
            if status in (200, 202):
                with lock:
                    acked.append(event_id_of(body))

    threads = [threading.Thread(target=send, args=(bodies[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 60, what="60 acknowledged events")
    server.kill()
    for t in threads:
        t.join()
    handled_before = set(server.seen())
    assert len(handled_before) < len(acked), "the kill should land while events are still queued"

    restarted = make_server(E2E_HANDLER_DELAY_S="0").start()
    # DT retries everything it did not get a 2xx for. Claims held by requests that the kill
    # cut off were freed at restart, so no retry is refused as "in flight" (503).
    for body in (b for b in bodies if event_id_of(b) not in set(acked)):
        assert restarted.request("POST", "/", body, signed(body))[0] in (200, 202)
    wait_until(lambda: set(restarted.seen()) >= {event_id_of(b) for b in bodies}, what="every event handled")
    seen = restarted.seen()
    assert set(seen) == {event_id_of(b) for b in bodies}
    # At most the one handler call in flight at the kill can run twice (its completion was
    # not recorded); nothing else repeats.
    assert len(seen) - len(set(seen)) <= 1
    wait_until(lambda: restarted.request("GET", "/healthz")[1]["queued"] == 0, what="an empty queue")
    state = json.loads(restarted.cli("state"))
    for i in range(5):
        newest = max((b for b in bodies if f'"dev-{i}"' in b.decode()), key=lambda b: json.loads(b)["event"]["timestamp"])
        assert state[f"dev-{i}"]["temperature"]["eventId"] == event_id_of(newest)


def test_reading_commands_print_only_their_output(make_server):
    """`state` and `dead-letters` open the database read-side: no receiver, no start-up
    warnings on stderr to confuse a script reading their JSON."""
    import subprocess
    import sys

    server = make_server().start()
    body = event_body(device="dev-quiet")
    assert server.request("POST", "/", body, signed(body))[0] == 202
    wait_until(lambda: len(server.seen()) == 1, what="the event handled")
    db = str(server.workdir / "events.db")
    for command, stderr in ((["state", "--device", "dev-quiet"], ""), (["dead-letters"], f"no dead letters in {db}\n")):
        done = subprocess.run(
            [sys.executable, "-m", "dtconnector", *command, "--db", db],
            env={**server.env, "DT_SIGNATURE_SECRET": ""}, capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0 and done.stderr == stderr, (command, done.stderr)
    assert "dev-quiet" in json.loads(server.cli("state"))
