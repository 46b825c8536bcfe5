"""Ingest scenarios every platform must pass, with the exact status code of each case."""

from __future__ import annotations

import json
import threading
import time

import pytest

from core.keys import store_key
from core.ports import COMPLETED, IN_PROGRESS, Claim
from tests.dt import SECRET, event_body, event_id_of, sample_bodies, signed


def test_valid_event_is_accepted_queued_and_handled(platform, seen):
    body = event_body("temperature", device="d-valid")
    reply = platform.deliver(body, signed(body))
    assert reply.status == 202
    assert reply.json == {"status": "accepted", "eventId": event_id_of(body)}
    assert platform.queue_depth() == 1
    platform.drain()
    assert [e.event_id for e in seen] == [event_id_of(body)]
    assert seen[0].data.value == 21.5
    assert platform.queue_depth() == 0


def test_duplicate_is_acknowledged_with_200_and_not_queued_again(platform, seen):
    body = event_body()
    assert platform.deliver(body, signed(body)).status == 202
    again = platform.deliver(body, signed(body))
    assert again.status == 200
    assert again.json["status"] == "duplicate"
    assert platform.queue_depth() == 1
    platform.drain()
    assert len(seen) == 1


def test_concurrent_duplicates_enqueue_exactly_once(platform, seen):
    body = event_body()
    headers = signed(body)
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def send():
        barrier.wait()
        statuses.append(platform.deliver(body, headers).status)

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(202) == 1
    assert set(statuses) <= {202, 200, 503}  # 503 = "in flight elsewhere, retry"
    assert platform.queue_depth() == 1
    # DT retries the 503s: by now they are duplicates.
    assert platform.deliver(body, headers).status == 200
    platform.drain()
    assert len(seen) == 1


def test_event_being_received_elsewhere_gets_503_until_its_claim_expires(platform):
    body = event_body()
    key = store_key(event_id_of(body))
    assert platform.claim_store.create(key, Claim(IN_PROGRESS, time.time() + 30, "other-request"))
    reply = platform.deliver(body, signed(body))
    assert reply.status == 503
    assert reply.headers.get("Retry-After") or reply.headers.get("retry-after")
    assert platform.queue_depth() == 0
    # The other request died: its claim expires and DT's retry takes over.
    assert platform.claim_store.replace(key, "other-request", Claim(IN_PROGRESS, time.time() - 1, "dead-request"))
    assert platform.deliver(body, signed(body)).status == 202
    assert platform.queue_depth() == 1


def test_completed_claim_past_its_ttl_is_accepted_as_new(platform):
    body = event_body()
    key = store_key(event_id_of(body))
    assert platform.claim_store.create(key, Claim(COMPLETED, time.time() - 1, "long-ago"))
    assert platform.deliver(body, signed(body)).status == 202


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong-secret", "tampered-body", "expired", "future-iat", "no-exp", "garbage", "two-headers"],
)
def test_bad_signature_is_401_and_nothing_is_queued(platform, case):
    body = event_body()
    now = int(time.time())
    headers: dict | list = signed(body)
    if case == "missing":
        headers = {"Content-Type": "application/json"}
    elif case == "wrong-secret":
        headers = signed(body, secret="not-the-secret-0123456789abcdef0")
    elif case == "tampered-body":
        body = body.replace(b"21.5", b"99.9")
    elif case == "expired":
        headers = signed(body, iat=now - 7200)
    elif case == "future-iat":
        headers = signed(body, iat=now + 600)
    elif case == "no-exp":
        headers = signed(body, exp=None)
    elif case == "garbage":
        headers = {"X-Dt-Signature": "not.a.jwt"}
    elif case == "two-headers":
        token = signed(body)["X-Dt-Signature"]
        headers = [("X-Dt-Signature", token), ("X-Dt-Signature", token)]
    reply = platform.deliver(body, headers)
    assert reply.status == 401, reply.body
    assert reply.json["error"] == "unauthorized"
    assert SECRET not in reply.body
    assert platform.queue_depth() == 0


@pytest.mark.parametrize("name", ["x-dt-signature", "X-DT-SIGNATURE", "X-Dt-Signature"])
def test_signature_header_name_is_case_insensitive(platform, name):
    body = event_body()
    reply = platform.deliver(body, {name: signed(body)["X-Dt-Signature"]})
    assert reply.status == 202


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2, 3]",
        b"\xff\xfe\x00garbage",
        b'{"event": "nope"}',
        b"{}",
        b"",
    ],
    ids=["not-json", "array", "not-utf8", "event-not-object", "empty-object", "empty-body"],
)
def test_malformed_body_is_400(platform, body):
    reply = platform.deliver(body, signed(body))
    assert reply.status == 400, reply.body
    assert reply.json["error"] == "bad_request"
    assert platform.queue_depth() == 0


@pytest.mark.parametrize("field", ["eventId", "eventType", "targetName", "timestamp"])
def test_body_lacking_a_required_field_is_400(platform, field):
    doc = json.loads(event_body())
    del doc["event"][field]
    body = json.dumps(doc).encode()
    reply = platform.deliver(body, signed(body))
    assert reply.status == 400
    assert field in reply.json["reason"]
    assert platform.queue_depth() == 0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_numbers_outside_json_are_400(platform, number):
    body = event_body("co2", data={"co2": {"ppm": 1}}).replace(b'"ppm":1}', b'"ppm":' + number.encode() + b'}')
    assert number.encode() in body
    assert platform.deliver(body, signed(body)).status == 400
    assert platform.queue_depth() == 0


@pytest.mark.parametrize("timestamp", ["yesterday", "2024-02-30T10:00:00Z", "9999-12-31T23:59:59-01:00"])
def test_unparseable_timestamp_is_400(platform, timestamp):
    body = event_body(timestamp=timestamp)
    assert platform.deliver(body, signed(body)).status == 400
    assert platform.queue_depth() == 0


def test_oversized_body_is_413(platform):
    body = event_body(labels={"pad": "x" * (256 * 1024)})
    reply = platform.deliver(body, signed(body))
    assert reply.status == 413
    assert platform.queue_depth() == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_non_post_is_405(platform, method):
    body = event_body()
    reply = platform.deliver(body, signed(body), method=method)
    assert reply.status == 405
    assert platform.queue_depth() == 0


def test_any_path_is_accepted(platform):
    body = event_body()
    assert platform.deliver(body, signed(body), path="/some/connector/path").status == 202


def test_every_event_type_is_accepted_and_dispatched_typed(platform, seen):
    bodies = sample_bodies()
    for body in bodies:
        assert platform.deliver(body, signed(body)).status == 202, body[:80]
    platform.drain()
    assert sorted(e.event_type for e in seen) == sorted(json.loads(b)["event"]["eventType"] for b in bodies)
    assert all(e.is_known_type for e in seen)
    by_type = {e.event_type: e for e in seen}
    assert by_type["temperature"].data.value == 24.9
    assert by_type["labelsChanged"].data.added == {"room": "B12"}


def test_unknown_event_type_is_acknowledged_and_keeps_raw_data(platform, seen):
    body = event_body("brandNewSensorThing", data={"brandNewSensorThing": {"level": 3}})
    assert platform.deliver(body, signed(body)).status == 202
    platform.drain()
    assert seen[0].data == {"brandNewSensorThing": {"level": 3}}


def test_event_nobody_handles_is_acknowledged(platform):
    body = event_body("co2", data={"co2": {"ppm": 400}})
    assert platform.deliver(body, signed(body)).status == 202
    platform.drain()
    assert platform.queue_depth() == 0
    assert platform.dead_letters() == []


def test_claim_store_failure_is_503_and_nothing_is_queued(platform):
    body = event_body()
    with platform.broken("claims"):
        reply = platform.deliver(body, signed(body))
    assert reply.status == 503
    assert platform.queue_depth() == 0
    assert platform.deliver(body, signed(body)).status == 202


def test_queue_failure_is_503_and_releases_the_claim(platform, seen):
    body = event_body()
    with platform.broken("queue"):
        reply = platform.deliver(body, signed(body))
    assert reply.status == 503
    # Released, not left in flight: DT's retry is accepted (202), not refused or deduped.
    assert platform.claim_store.get(store_key(event_id_of(body))) is None
    assert platform.deliver(body, signed(body)).status == 202
    assert platform.queue_depth() == 1
    platform.drain()
    assert len(seen) == 1


def test_no_secret_configured_fails_closed_with_503(make_platform):
    platform = make_platform(DT_SIGNATURE_SECRET=None)
    body = event_body()
    reply = platform.deliver(body, signed(body))
    assert reply.status == 503
    assert "DT_SIGNATURE_SECRET" in reply.json["reason"]
    assert platform.queue_depth() == 0


def test_previous_secret_is_accepted_during_rotation(make_platform):
    platform = make_platform(DT_SIGNATURE_SECRET="the-new-secret-0123456789abcdef01", DT_SIGNATURE_SECRET_PREVIOUS=SECRET)
    body = event_body()
    assert platform.deliver(body, signed(body, secret=SECRET)).status == 202
    other = event_body()
    assert platform.deliver(other, signed(other, secret="the-new-secret-0123456789abcdef01")).status == 202
