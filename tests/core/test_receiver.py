"""Receiver behaviour that is core's alone: configuration, logging, unexpected failures.
(The status code of every input on every platform is in tests/contract.)"""

from __future__ import annotations

import io
import json
import logging

import pytest

from core import logs
from core.config import ConfigError, Secret, Settings
from core.http import Headers, Request
from core.receiver import Receiver
from tests.dt import SECRET, event_body, signed


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logs.log.addHandler(handler)
    old = logs.log.level
    logs.log.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logs.log.removeHandler(handler)
    logs.log.setLevel(old)


def post(receiver, body, headers):
    return receiver.handle(Request("POST", body, Headers(headers)))


def test_log_lines_are_json_with_the_event_id_and_never_the_secret_or_token(claim_store, queue, log_lines):
    receiver = Receiver(Settings(secrets=(Secret(SECRET),)), claim_store, queue)
    body = event_body(event_id="evt-logged")
    headers = signed(body)
    post(receiver, body, headers)
    post(receiver, body, headers)
    post(receiver, body, signed(body, secret="wrong-secret-0123456789abcdef0123"))
    lines = log_lines()
    assert [l["message"] for l in lines] == ["accepted", "duplicate", "rejected signature"]
    assert lines[0]["eventId"] == "evt-logged"
    text = json.dumps(lines)
    assert SECRET not in text and headers["X-Dt-Signature"] not in text


def test_no_secret_logs_the_missing_setting_at_start_and_on_each_post(claim_store, queue, log_lines):
    receiver = Receiver(Settings(), claim_store, queue)
    assert "DT_SIGNATURE_SECRET" in log_lines()[0]["message"]
    body = event_body()
    assert post(receiver, body, signed(body)).status == 503
    assert "DT_SIGNATURE_SECRET" in log_lines()[-1]["message"]
    assert queue.depth() == 0


def test_allow_unsigned_accepts_without_header_and_warns_at_start(claim_store, queue, log_lines):
    receiver = Receiver(Settings(allow_unsigned=True), claim_store, queue)
    assert "UNSIGNED" in log_lines()[0]["message"] and log_lines()[0]["level"] == "warning"
    assert post(receiver, event_body(), {}).status == 202


def test_a_configured_secret_wins_over_allow_unsigned(claim_store, queue):
    receiver = Receiver(Settings(secrets=(Secret(SECRET),), allow_unsigned=True), claim_store, queue)
    assert post(receiver, event_body(), {}).status == 401


def test_short_secret_is_warned_about_without_printing_it(claim_store, queue, log_lines):
    Receiver(Settings(secrets=(Secret("short"),)), claim_store, queue)
    [line] = log_lines()
    assert "shorter than 32 bytes" in line["message"] and "short" not in json.dumps(line).replace("shorter", "")


def test_unexpected_error_is_503_never_500(claim_store, queue, monkeypatch):
    receiver = Receiver(Settings(secrets=(Secret(SECRET),)), claim_store, queue)

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(queue, "enqueue", bug)
    body = event_body()
    response = post(receiver, body, signed(body))
    assert response.status == 503
    assert "ZeroDivisionError" not in response.body
    # the claim was released, so DT's retry is accepted once the bug is gone
    monkeypatch.undo()
    assert post(receiver, body, signed(body)).status == 202


def test_settings_read_every_variable():
    s = Settings.from_env(
        {
            "DT_SIGNATURE_SECRET": "a",
            "DT_SIGNATURE_SECRET_PREVIOUS": "b",
            "DT_CLOCK_LEEWAY_S": "5",
            "DT_MAX_BODY_BYTES": "1000",
            "DT_ALLOW_UNSIGNED": "true",
            "DT_HANDLERS": "x, y",
            "DT_MAX_ATTEMPTS": "7",
        }
    )
    assert s.secrets == (Secret("a"), Secret("b"))
    assert (s.leeway_s, s.max_body_bytes, s.allow_unsigned, s.handler_modules, s.max_attempts) == (
        5.0, 1000, True, ("x", "y"), 7,
    )


@pytest.mark.parametrize("name, value", [("DT_CLOCK_LEEWAY_S", "soon"), ("DT_MAX_BODY_BYTES", "0"), ("DT_CLOCK_LEEWAY_S", "-1")])
def test_bad_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_secrets_do_not_print_themselves():
    s = Settings(secrets=(Secret("hunter2-very-secret"),))
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.secrets[0])
    assert "x-dt-signature" in repr(Headers({"X-Dt-Signature": "tok"})) and "tok" not in repr(Headers({"X-Dt-Signature": "tok"}))


class _OutboxQueue:
    """A queue offering core's optional AtomicOutbox, recording which path ingest took."""

    def __init__(self, claim_store, queue):
        self.claim_store, self.queue, self.calls = claim_store, queue, []

    def claim_and_enqueue(self, key, claim, message, *, event_id):
        self.calls.append("claim_and_enqueue")
        if not self.claim_store.create(key, claim):
            return False
        self.queue.enqueue(message, event_id=event_id)
        return True

    def enqueue(self, message, *, event_id):
        self.calls.append("enqueue")
        self.queue.enqueue(message, event_id=event_id)


def test_atomic_outbox_claims_and_queues_in_one_call(claim_store, queue, clock):
    outbox = _OutboxQueue(claim_store, queue)
    receiver = Receiver(Settings(secrets=(Secret(SECRET),)), claim_store, outbox, clock)
    body = event_body(event_id="atomic-1")
    assert post(receiver, body, signed(body, iat=int(clock.now))).status == 202
    assert post(receiver, body, signed(body, iat=int(clock.now))).status == 200
    assert outbox.calls == ["claim_and_enqueue", "claim_and_enqueue"]
    assert queue.depth() == 1


def test_atomic_outbox_writes_the_claim_completed_in_its_one_write(claim_store, queue, clock):
    from core.keys import store_key
    from core.ports import COMPLETED

    outbox = _OutboxQueue(claim_store, queue)
    settings = Settings(secrets=(Secret(SECRET),))
    receiver = Receiver(settings, claim_store, outbox, clock)
    replaced = []
    real_replace = claim_store.replace
    claim_store.replace = lambda *a: replaced.append(a) or real_replace(*a)
    body = event_body(event_id="atomic-3")
    assert post(receiver, body, signed(body, iat=int(clock.now))).status == 202
    stored = claim_store.get(store_key("atomic-3"))
    assert stored.status == COMPLETED and stored.expires_at == clock.now + settings.dedup_ttl_s
    assert replaced == []  # no second write to mark it completed


def test_atomic_outbox_takeover_of_an_expired_claim_enqueues_separately(claim_store, queue, clock):
    from core.keys import store_key
    from core.ports import IN_PROGRESS, Claim

    outbox = _OutboxQueue(claim_store, queue)
    receiver = Receiver(Settings(secrets=(Secret(SECRET),)), claim_store, outbox, clock)
    claim_store.create(store_key("atomic-2"), Claim(IN_PROGRESS, clock.now - 1, "dead-request"))
    body = event_body(event_id="atomic-2")
    assert post(receiver, body, signed(body, iat=int(clock.now))).status == 202
    assert outbox.calls == ["claim_and_enqueue", "enqueue"]
    assert queue.depth() == 1


def test_a_failing_metrics_recorder_never_changes_the_answer(claim_store, queue):
    from core.config import Settings
    from core.http import Headers, Request
    from core.metrics import LineRecorder, Recorder
    from core.receiver import Receiver
    from tests.dt import BASE_ENV, event_body, signed

    class Broken(Recorder):
        def count(self, name, value=1, **dims):
            raise RuntimeError("recorder bug")

    class ClosedStream(LineRecorder):
        def line(self, kind, name, value, dims):
            return name

    closed = __import__("io").StringIO()
    closed.close()
    for recorder in (Broken(), ClosedStream(stream=closed)):
        receiver = Receiver(Settings.from_env(BASE_ENV), claim_store, queue, metrics=recorder)
        body = event_body()
        assert receiver.handle(Request("POST", body, Headers(signed(body)))).status == 202
