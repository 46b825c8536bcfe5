"""The ONE table of message shapes direct delivery accepts (core/direct.py).

DT's message format on its native connectors is unpublished: when it becomes known, this
table and `decode_direct_message` are the two places that change.
"""

from __future__ import annotations

import base64
import json

import pytest

from core.config import ConfigError, Settings
from core.direct import NotADtEvent, decode_direct_message
from core.events import InvalidEvent, parse_event
from tests.dt import event_body

PUSH = event_body(event_id="evt-direct-1", device="dev-d", labels={"room": "1"})
EVENT = json.loads(PUSH)["event"]
BARE = json.dumps(EVENT).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pubsub_message(data: bytes) -> dict:
    return {"data": b64(data), "attributes": {}, "messageId": "1", "publishTime": "2026-11-22T10:00:00Z"}


# (name, what the queue hands the worker, the labels the decoded body must carry)
ACCEPTED = [
    ("push body bytes (Service Bus / Event Hub body)", PUSH, {"room": "1"}),
    ("push body text (SQS body)", PUSH.decode(), {"room": "1"}),
    ("push body with surrounding whitespace", b"\n " + PUSH + b"\n", {"room": "1"}),
    ("push body base64 text", b64(PUSH), {"room": "1"}),
    ("push body base64 bytes", b64(PUSH).encode(), {"room": "1"}),
    ("push body as a decoded object", json.loads(PUSH), {"room": "1"}),
    ("push body double-encoded as a JSON string", json.dumps(PUSH.decode()), {"room": "1"}),
    ("bare event bytes", BARE, {}),
    ("bare event text", BARE.decode(), {}),
    ("bare event base64", b64(BARE), {}),
    ("bare event as a decoded object", dict(EVENT), {}),
    ("Pub/Sub message, data = base64 push body", pubsub_message(PUSH), {"room": "1"}),
    ("Pub/Sub message as JSON text", json.dumps(pubsub_message(BARE)), {}),
    ("Pub/Sub push envelope", {"message": pubsub_message(PUSH), "subscription": "projects/p/subscriptions/s"}, {"room": "1"}),
    ("base64 of a Pub/Sub envelope", b64(json.dumps({"message": pubsub_message(PUSH)}).encode()), {"room": "1"}),
]

REFUSED = [
    ("empty", b"", "empty"),
    ("whitespace", "  \n", "empty"),
    ("not UTF-8", b"\xff\xfe{}", "UTF-8"),
    ("not JSON nor base64", "hello world", "neither JSON nor base64"),
    ("base64 of garbage", b64(b"\xff\x00binary"), "UTF-8"),
    ("broken JSON", b'{"event": ', "not valid JSON"),
    ("JSON array", b"[1, 2]", "not an object"),
    ("JSON number inside a string", json.dumps("42"), "neither JSON nor base64"),
    ("object without an event", b'{"hello": "world"}', "neither a DT 'event'"),
    ("event that is not an object", b'{"event": "x"}', "neither a DT 'event'"),
    ("bare event lacking targetName", json.dumps({"eventId": "e", "eventType": "touch"}), "neither a DT 'event'"),
    ("Pub/Sub data not base64", {"message": {"data": "%%%"}}, "neither JSON nor base64"),
    ("Pub/Sub data not a string", {"message": {"data": 5}}, "not a base64 string"),
    ("NaN smuggled in a bare event", '{"eventId":"e","eventType":"t","targetName":"x","data":NaN}', "NaN is not a JSON number"),
    ("a bare event nested too deep", '{"eventId":"e","eventType":"t","targetName":"x","data":' + "[" * 900 + "]" * 900 + "}", "nested more than"),
    ("1e400 in a bare event", '{"eventId":"e","eventType":"t","targetName":"x","data":1e400}', "number too large"),
    ("a lone surrogate in a bare event", '{"eventId":"\\ud800","eventType":"t","targetName":"x"}', "lone UTF-16 surrogate"),
    ("a list object", [PUSH], "not bytes, text or an object"),
    ("None", None, "not bytes, text or an object"),
]


@pytest.mark.parametrize("raw, labels", [(r, l) for _, r, l in ACCEPTED], ids=[n for n, _, _ in ACCEPTED])
def test_accepted_shapes_decode_to_the_push_body(raw, labels):
    body = decode_direct_message(raw)
    assert isinstance(body, bytes)
    event = parse_event(body)
    assert (event.event_id, event.device_id, event.event_type) == ("evt-direct-1", "dev-d", "temperature")
    assert event.labels == labels
    assert json.loads(body)["event"] == EVENT


def test_a_push_body_given_as_bytes_comes_back_byte_for_byte():
    assert decode_direct_message(PUSH) == PUSH
    assert decode_direct_message(b64(PUSH)) == PUSH


@pytest.mark.parametrize("raw, reason", [(r, why) for _, r, why in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_anything_else_is_not_a_dt_event(raw, reason):
    with pytest.raises(NotADtEvent) as caught:
        decode_direct_message(raw)
    assert reason in str(caught.value)
    assert isinstance(caught.value, InvalidEvent)  # the worker's poison path catches it


def test_a_decoded_body_over_the_limit_is_not_a_dt_event():
    assert decode_direct_message(b64(PUSH), max_bytes=len(PUSH)) == PUSH
    with pytest.raises(NotADtEvent, match="over DT_MAX_BODY_BYTES"):
        decode_direct_message(b64(PUSH), max_bytes=len(PUSH) - 1)


def test_unwrapping_is_bounded():
    raw = PUSH
    for _ in range(6):
        raw = b64(raw if isinstance(raw, bytes) else raw.encode()).encode()
    with pytest.raises(NotADtEvent, match="too many times"):
        decode_direct_message(raw)


def test_reasons_never_quote_the_message():
    secretish = "sk_live_do_not_log_me"
    for raw in (secretish, json.dumps({"token": secretish}), {"message": {"data": secretish + "%"}}):
        with pytest.raises(NotADtEvent) as caught:
            decode_direct_message(raw)
        assert secretish not in str(caught.value)


def test_delivery_setting():
    assert Settings.from_env({}).delivery == "http"
    assert Settings.from_env({"DT_DELIVERY": " Direct "}).delivery == "direct"
    with pytest.raises(ConfigError, match="DT_DELIVERY"):
        Settings.from_env({"DT_DELIVERY": "carrier-pigeon"})


# --- the worker in direct mode: decoding first, then the same code as http mode ----------


@pytest.fixture
def direct_worker(claim_store, state_store, clock):
    from core.worker import Worker

    return Worker(Settings(delivery="direct"), claim_store, state_store, clock=clock)


def test_duplicated_dt_messages_in_any_shape_run_handlers_once(direct_worker, state_store):
    from core import on
    from core.claims import Outcome

    calls = []
    on("*")(lambda e: calls.append(e.event_id))
    outcomes = [direct_worker.process(raw) for raw in (b64(PUSH), PUSH, BARE, json.dumps(pubsub_message(PUSH)))]
    assert outcomes == [Outcome.CLAIMED, Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert calls == ["evt-direct-1"]
    assert [s.event_id for s in state_store.get_device("dev-d")] == ["evt-direct-1"]


def test_not_a_dt_event_is_poison_with_a_clear_log_line(direct_worker, caplog):
    import logging

    from core.worker import PoisonMessage

    with caplog.at_level(logging.ERROR, logger="dtconnector"), pytest.raises(PoisonMessage, match="neither a DT"):
        direct_worker.process(b'{"hello": "world"}')
    assert any("not a DT event" in r.getMessage() for r in caplog.records)


def test_http_mode_worker_does_not_decode(claim_store, state_store, clock):
    """In http mode the queue only ever holds bodies ingest verified: a base64 message there
    is not ours, and must not be accepted."""
    from core.worker import PoisonMessage, Worker

    worker = Worker(Settings(), claim_store, state_store, clock=clock)
    with pytest.raises(PoisonMessage):
        worker.process(b64(PUSH))
