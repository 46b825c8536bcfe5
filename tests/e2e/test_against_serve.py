"""The emulator against a real `dtconnector serve` subprocess over loopback HTTP."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from core.events import parse_event
from emulator.generate import generate
from emulator.sender import SendConfig, Sender

from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _newest(events) -> dict:
    """What `dtconnector state` must show: the newest event per device and type."""
    newest: dict = {}
    for e in events:
        version = parse_event(e.body).version
        key = (e.device_id, e.event_type)
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, e.event_id)
    return {key: event_id for key, (_, event_id) in newest.items()}


def _state_ids(state: dict) -> dict:
    return {(device, etype): v["eventId"] for device, types in state.items() for etype, v in types.items()}


def _assert_exactly_once_and_state(serve, events) -> None:
    ids = {e.event_id for e in events}
    wait_until(lambda: len(serve.seen()) >= len(ids) and serve.health()["queued"] == 0, timeout=60,
               what="every event handled")
    seen = Counter(serve.seen())
    assert set(seen) == ids, "nothing lost, nothing invented"
    assert [i for i, n in seen.items() if n != 1] == [], "each unique event reached the handlers exactly once"
    assert serve.health()["deadLetters"] == 0
    assert _state_ids(serve.state()) == _newest(events)


def test_duplicates_and_shuffling_reach_the_handlers_once(make_serve, secret):
    serve = make_serve().start()
    events = generate(300, devices=12, seed=11)
    config = SendConfig(url=serve.url, secret=secret, concurrency=16, duplicates=0.3, shuffle=True,
                        retry_base_s=0.05, retry_max_s=0.5, seed=11, progress=False)
    summary = Sender(config).run([e.body for e in events])
    assert (summary.accepted, summary.deliveries, summary.given_up, summary.duplicates_sent) == (390, 390, 0, 90)
    assert summary.statuses.get("202") == 300, "each unique event is accepted once"
    assert summary.statuses.get("200", 0) >= 1  # duplicates answered as such
    _assert_exactly_once_and_state(serve, events)


def test_receiver_killed_mid_run_and_restarted_while_the_emulator_retries(make_serve, secret, tmp_path):
    marker = tmp_path / "paused"
    serve = make_serve(E2E_PAUSE_AFTER="40", E2E_PAUSE_MARKER=str(marker)).start()
    port = serve.port
    events = generate(400, devices=10, seed=12)
    config = SendConfig(url=serve.url, secret=secret, concurrency=8, rate=250.0, duplicates=0.1, shuffle=True,
                        retry_base_s=0.05, retry_max_s=0.4, max_age_s=120.0, seed=12, progress=False)
    sender = Sender(config)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("summary", sender.run([e.body for e in events])))
    thread.start()
    try:
        # The 40th handler call pauses mid-handler: SIGKILL lands there, with ingest still running.
        wait_until(marker.exists, timeout=30, what="the handler to pause")
        accepted_before = sender.summary.accepted
        serve.kill()
        wait_until(lambda: sender.summary.statuses.get("error", 0) > 0, timeout=10, what="refused deliveries")
        serve.start(port)  # same port, same --db
    finally:
        thread.join(120)
    summary = result["summary"]
    assert accepted_before < 400, "the kill happened mid-run"
    assert summary.given_up == 0 and summary.accepted == summary.deliveries == 440
    assert summary.retried > 0
    paused_id = Path(marker).read_text()
    _assert_exactly_once_and_state(serve, events)
    assert paused_id in serve.seen()
    assert serve.stop() == 0


def test_serve_dev_generates_a_dev_secret_and_says_so(make_serve, tmp_path):
    serve = make_serve(DT_SIGNATURE_SECRET="")
    serve.env.pop("DT_SIGNATURE_SECRET")
    secret_file = tmp_path / "dev-secret"
    serve.start(0, "--dev", "--secret-file", str(secret_file))
    wait_until(lambda: any("note:" in line for line in serve.banner), timeout=10, what="the note")
    banner = "".join(serve.banner)
    assert secret_file.exists() and (secret_file.stat().st_mode & 0o777) == 0o600
    assert f"generated a development secret in {secret_file}" in banner
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32 and secret not in banner
    events = generate(20, devices=2, seed=13)
    summary = Sender(SendConfig(url=serve.url, secret=secret, concurrency=4, progress=False)).run(
        [e.body for e in events])
    assert summary.accepted == 20
    serve.stop()
    serve.start(0, "--dev", "--secret-file", str(secret_file))
    wait_until(lambda: any("note:" in line for line in serve.banner), timeout=10, what="the note")
    assert f"using a development secret in {secret_file}" in "".join(serve.banner)
    assert secret_file.read_text().strip() == secret


def test_emulator_signs_with_dt_asymmetric_signature_for_asymmetric_mode(make_serve, tmp_path):
    """`dtconnector send --asymmetric-key` against `serve` in DT_SIGNATURE_MODE=asymmetric,
    whose keys come from a loopback JWKS server: the CLI path a user would follow."""
    import json
    import os
    import subprocess
    import sys

    from emulator.jwks import JwksServer, generate_private_key_pem, key_id

    pem = generate_private_key_pem()
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)
    other_file = tmp_path / "other.pem"
    other_file.write_bytes(generate_private_key_pem())
    with JwksServer([(key_id(pem), pem)]) as jwks:
        serve = make_serve(DT_SIGNATURE_MODE="asymmetric", DT_JWKS_ISSUER=jwks.issuer).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DT_")}

        def send(key: Path, count: int, *extra: str) -> dict:
            out = subprocess.run(
                [sys.executable, "-m", "dtconnector", "send", "--url", serve.url, "--asymmetric-key", str(key),
                 "--issuer", jwks.issuer, "--count", str(count), "--devices", "3", "--json", "--no-progress", *extra],
                env=env, capture_output=True, text=True, timeout=120,
            )
            return json.loads(out.stdout)

        good = send(key_file, 30)
        assert (good["accepted"], good["given_up"]) == (30, 0)
        wait_until(lambda: len(serve.seen()) == 30, what="30 handled events")
        assert jwks.requests >= 1
        forged = send(other_file, 3, "--patient", "--max-age", "1", "--retry-base", "0.2")  # DT's patience: 401s retried
        assert forged["accepted"] == 0 and forged["given_up"] == 3
        assert set(forged["statuses"]) == {"401"}
