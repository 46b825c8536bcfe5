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
    return subprocess.run([sys.executable, "-m", "local_receiver.cli", "send", *args], cwd=REPO,
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
