"""The emulator's own behaviours, against a tiny scripted receiver on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from core.config import Secret
from core.events import parse_event
from core.payloads import EVENT_TYPES as CORE_TYPES
from core.signature import SecretVerifier
from emulator.generate import EVENT_TYPES, EventGenerator, generate
from emulator.sender import SendConfig, Sender, plan
from tests.dt import sample_bodies

from .conftest import REPO

pytestmark = pytest.mark.slow


def _fast(url: str, secret: str | None, **kw) -> SendConfig:
    defaults = dict(concurrency=4, timeout_s=2.0, retry_base_s=0.02, retry_max_s=0.1, max_age_s=30.0, seed=7,
                    progress=False)
    defaults.update(kw)
    return SendConfig(url=url, secret=secret, **defaults)


def test_generated_events_cover_every_type_and_parse_with_core():
    events = generate(200, devices=12, seed=3)
    assert set(EVENT_TYPES) == set(CORE_TYPES)
    assert {e.event_type for e in events[: len(EVENT_TYPES)]} == set(EVENT_TYPES)
    assert len({e.event_id for e in events}) == 200
    last: dict[str, int] = {}
    for e in events:
        parsed = parse_event(e.body)
        assert (parsed.event_id, parsed.event_type, parsed.device_id) == (e.event_id, e.event_type, e.device_id)
        assert parsed.data is not None and parsed.metadata.device_id == e.device_id
        assert parsed.version > last.get(e.device_id, 0), "timestamps strictly increase per device"
        last[e.device_id] = parsed.version
    temps = [parse_event(e.body).data.value for e in events if e.event_type == "temperature"]
    assert temps and all(isinstance(t, float) for t in temps)


def test_types_filter_limits_the_event_types():
    events = list(EventGenerator(5, ["co2", "touch"], seed=1).events(50))
    assert {e.event_type for e in events} == {"co2", "touch"}


def test_signing_verifies_with_cores_verifier_and_custom_headers_arrive(scripted, secret):
    server = scripted(lambda n, body, headers: 202)
    bodies = [e.body for e in generate(20, devices=3, seed=1)]
    summary = Sender(_fast(server.url, secret, headers=[("X-Api-Key", "k1")])).run(bodies)
    assert summary.accepted == 20 and summary.sent == 20
    verifier = SecretVerifier([Secret(secret)], 5.0)
    jtis = set()
    for body, headers in server.requests:
        claims = verifier.verify(headers["x-dt-signature"], body)
        assert claims["exp"] - claims["iat"] == 3600
        assert set(claims) == {"checksum", "checksum_sha256", "iat", "exp", "jti"}
        jtis.add(claims["jti"])
        assert headers["x-api-key"] == "k1"
        assert headers["content-type"] == "application/json"
    assert len(jtis) == 20
    assert sorted(b for b, _ in server.requests) == sorted(bodies)


def test_retries_on_503_until_accepted(scripted, secret):
    server = scripted(lambda n, body, headers: 503 if n <= 2 else 202)
    bodies = [e.body for e in generate(10, devices=2, seed=2)]
    summary = Sender(_fast(server.url, secret)).run(bodies)
    assert (summary.accepted, summary.sent, summary.retried, summary.given_up) == (10, 30, 20, 0)
    assert summary.statuses == {"503": 20, "202": 10}
    # each retry is signed afresh
    tokens = [h["x-dt-signature"] for b, h in server.requests if b == bodies[0]]
    assert len(set(tokens)) == 3


def test_retries_after_a_timeout(scripted, secret):
    server = scripted(lambda n, body, headers: ("sleep", 1.0, 202) if n == 1 else 202)
    bodies = [e.body for e in generate(3, devices=1, seed=4)]
    summary = Sender(_fast(server.url, secret, timeout_s=0.3)).run(bodies)
    assert summary.statuses.get("timeout") == 3
    assert summary.accepted == 3 and summary.retried == 3 and summary.given_up == 0


def test_connection_refused_is_retried_then_given_up_after_max_age(secret):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bodies = [e.body for e in generate(2, devices=1, seed=5)]
    summary = Sender(_fast(f"http://127.0.0.1:{port}/", secret, max_age_s=0.3)).run(bodies)
    assert summary.given_up == 2 and summary.accepted == 0 and summary.statuses["error"] >= 4
    assert sorted(summary.given_up_ids) == sorted(json.loads(b)["event"]["eventId"] for b in bodies)


def test_duplicates_share_and_shuffle(scripted, secret):
    server = scripted(lambda n, body, headers: 202)
    bodies = [e.body for e in generate(100, devices=5, seed=6)]
    summary = Sender(_fast(server.url, secret, duplicates=0.2, shuffle=True)).run(bodies)
    assert (summary.events, summary.deliveries, summary.duplicates_sent, summary.accepted) == (100, 120, 20, 120)
    counts = Counter(b for b, _ in server.requests)
    assert sorted(Counter(counts.values()).items()) == [(1, 80), (2, 20)]
    order = [b for b, _ in server.requests]
    assert order != sorted(order, key=bodies.index), "delivered out of order"


def test_plan_places_duplicates_close_to_their_original():
    bodies = [str(i).encode() for i in range(200)]
    order = plan(bodies, duplicates=0.5)
    assert len(order) == 300 and sum(d.duplicate for d in order) == 100
    first = {}
    for pos, d in enumerate(order):
        if d.duplicate:
            assert 0 < pos - first[d.body] <= 40
        else:
            first[d.body] = pos


def test_rate_limits_new_events(scripted, secret):
    server = scripted(lambda n, body, headers: 202)
    bodies = [e.body for e in generate(10, devices=2, seed=8)]
    summary = Sender(_fast(server.url, secret, rate=20.0)).run(bodies)
    assert summary.accepted == 10 and summary.elapsed_s >= 0.4


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtconnector", "send", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_summary_json_and_exit_status(scripted, secret):
    server = scripted(lambda n, body, headers: 202 if n > 1 else 503)
    out = _cli("--url", server.url, "--secret", secret, "--count", "30", "--devices", "4", "--duplicates", "0.1",
               "--shuffle", "--retry-base", "20ms", "--json", "--header", "X-Api-Key: abc")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {"sent", "accepted", "retried", "given_up", "duplicates_sent", "ack_latency_ms", "statuses"} <= set(summary)
    assert summary["accepted"] == 33 and summary["duplicates_sent"] == 3 and summary["given_up"] == 0
    assert summary["retried"] == 30  # duplicates of an accepted body are answered at once
    assert set(summary["ack_latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert "\r[" not in out.stderr, "no progress bar when stderr is not a terminal"
    assert server.requests[0][1]["x-api-key"] == "abc"


def test_cli_gives_up_after_max_age_with_exit_status_1(scripted, secret):
    server = scripted(lambda n, body, headers: 503)
    out = _cli("--url", server.url, "--secret", secret, "--count", "3", "--max-age", "300ms", "--retry-base", "20ms")
    assert out.returncode == 1
    assert "given up        3" in out.stdout and "accepted        0 of 3" in out.stdout
    assert len(server.requests) >= 6


def test_cli_replays_a_jsonl_file_byte_for_byte(scripted, secret, tmp_path):
    server = scripted(lambda n, body, headers: 200)
    samples = sample_bodies()
    path = tmp_path / "bodies.jsonl"
    path.write_bytes(b"\n".join(samples) + b"\n\n")
    out = _cli("--url", server.url, "--secret", secret, "--from", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accepted"] == len(samples) == 19
    assert sorted(b for b, _ in server.requests) == sorted(samples)


def test_cli_refuses_bad_arguments():
    assert _cli("--url", "ftp://x/", "--count", "1").returncode == 2
    bad = _cli("--url", "http://127.0.0.1:1/", "--duplicates", "1.5")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr


# --- a mistake named at once; a true summary -------------------------------------------------


def _first_stderr_line(proc: subprocess.Popen, needle: str, timeout: float) -> tuple[str, float]:
    """The first stderr line with `needle`, and how long after start it appeared."""
    import threading
    import time

    started = time.monotonic()
    found: list[tuple[str, float]] = []
    rest: list[str] = []

    def read():
        for line in proc.stderr:
            if needle in line and not found:
                found.append((line, time.monotonic() - started))
            rest.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = started + timeout
    while not found and time.monotonic() < deadline and (proc.poll() is None or not found):
        time.sleep(0.02)
        if proc.poll() is not None and not found:
            time.sleep(0.2)
            break
    assert found, f"no stderr line with {needle!r} within {timeout} s: {rest}"
    return found[0]


def test_cli_wrong_secret_is_named_in_under_5_s_and_stops(make_serve, secret):
    """Piped (no terminal): the receiver's 401 and its reason, at once; the run stops."""
    import time

    serve = make_serve().start()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dtconnector", "send", "--url", serve.url, "--secret",
                             "not-the-receivers-secret-0123456789", "--count", "200"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line, seconds = _first_stderr_line(proc, "401", timeout=5)
    assert seconds < 5
    assert line.strip() == ("dtconnector send: 401: token signature is invalid — check the secret (--secret or "
                            "DT_SIGNATURE_SECRET); stopping (--patient retries a 4xx as DT does)")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and time.monotonic() - started < 15
    assert "(stopped: 401: token signature is invalid" in out
    assert "refused (4xx)" in out and "not tried" in out and "NOT acknowledged: 200 of 200 deliveries" in out
    assert "not-the-receivers-secret" not in out and serve.seen() == []


def test_cli_patient_retries_a_4xx_as_dt_does(scripted, secret):
    server = scripted(lambda n, body, headers: 401 if n == 1 else 202)
    out = _cli("--url", server.url, "--secret", secret, "--count", "5", "--patient", "--retry-base", "20ms",
               "--json", "--seed", "3")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["accepted"], summary["refused"], summary["statuses"]) == (5, {}, {"202": 5, "401": 5})
    named = [line for line in out.stderr.splitlines() if "401" in line]  # still named, once, with what DT does
    assert len(named) == 1 and named[0].startswith("dtconnector send: 401: ")
    assert named[0].endswith("; retrying each event for up to 12h")


def test_cli_a_closed_port_names_the_url_and_the_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    out = _cli("--url", url, "--count", "3", "--max-age", "600ms", "--retry-base", "50ms", "--secret", "x" * 32)
    assert out.returncode == 1
    assert out.stderr.count(f"cannot deliver to {url}: connection refused; retrying each event for up to 0.6s") == 1
    assert "connection refused: " in out.stdout and "error: " not in out.stdout
    assert "given up        3" in out.stdout


def test_cli_ctrl_c_prints_a_true_summary(scripted, secret):
    import signal
    import time

    server = scripted(lambda n, body, headers: ("sleep", 0.2, 202))
    proc = subprocess.Popen([sys.executable, "-m", "dtconnector", "send", "--url", server.url, "--secret",
                             secret, "--count", "100", "--concurrency", "2", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(server.requests) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    summary = json.loads(out)
    assert summary["interrupted"] and 0 < summary["accepted"] < 100
    assert summary["unacknowledged"] == 100 - summary["accepted"]
    assert summary["accepted"] + summary["not_tried"] + sum(summary["refused"].values()) + summary["given_up"] \
        <= 100 <= summary["accepted"] + summary["not_tried"] + 2  # at most the 2 in flight unanswered


@pytest.mark.parametrize("status", [408, 429])
def test_a_4xx_that_asks_for_a_retry_is_retried_without_patience(scripted, secret, status):
    server = scripted(lambda n, body, headers: status if n == 1 else 202)
    summary = Sender(_fast(server.url, secret)).run([e.body for e in generate(4, devices=1, seed=9)])
    assert (summary.accepted, summary.refused, summary.stopped) == (4, 0, "")
    assert summary.statuses == {str(status): 4, "202": 4}


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_any_other_4xx_stops_the_run(scripted, secret, status):
    server = scripted(lambda n, body, headers: status)
    summary = Sender(_fast(server.url, secret, concurrency=1)).run([e.body for e in generate(20, devices=2, seed=9)])
    assert summary.accepted == 0 and summary.tally.refused == {str(status): 1} and summary.not_tried == 19
    assert summary.stopped.startswith(f"{status}: ") and len(server.requests) == 1
