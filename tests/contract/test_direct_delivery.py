"""Direct-delivery scenarios (platforms with ``direct = True``): DT publishes into the queue
itself, so the worker's ledger is the only dedup and the worker decodes DT's message."""

from __future__ import annotations

import base64
import json
import logging


from core.keys import store_key
from core.worker import WORKER_NAMESPACE
from tests.dt import event_body, event_id_of


def test_the_same_event_in_every_shape_runs_handlers_once_with_no_ingest_claim(platform, seen):
    body = event_body(device="d-shapes")
    for message in (body.decode(), base64.b64encode(body).decode(), json.dumps(json.loads(body)["event"])):
        platform.inject_message(message)
    platform.drain()
    assert [e.event_id for e in seen] == [event_id_of(body)]
    assert platform.device_state("d-shapes")["temperature"].event_id == event_id_of(body)
    assert platform.claim_store.get(store_key(event_id_of(body))) is None  # nothing but the worker's ledger
    assert platform.claim_store.get(store_key(event_id_of(body), WORKER_NAMESPACE)).status == "COMPLETED"
    assert platform.dead_letters() == []


def test_a_message_that_is_not_a_dt_event_is_dead_lettered_with_a_clear_log_line(platform, seen, caplog):
    good = event_body(device="d-good")
    platform.inject_message('{"hello": "world"}')
    platform.inject_message(good.decode())
    with caplog.at_level(logging.ERROR, logger="dtconnector"):
        platform.drain()
    assert [e.event_id for e in seen] == [event_id_of(good)]
    raw = platform.raw_dead_letters()
    assert [m if isinstance(m, str) else m.decode() for m in raw] == ['{"hello": "world"}']
    assert any("not a DT event" in r.getMessage() for r in caplog.records)
    assert platform.queue_depth() == 0


#: Shapes a queue cannot carry as text (SQS needs a non-empty valid-XML body, Pub/Sub
#: non-empty data), or that direct mode accepts as another shape (a JSON string is a
#: double-encoded body): the decoder's own table covers them (tests/core/test_direct.py).
_NOT_QUEUEABLE_AS_TEXT = {"empty", "root is a string"}


def test_a_message_that_cannot_be_an_event_is_poison_never_a_crash(platform, seen, caplog):
    """Every body HTTP ingest answers 400 (tests/malformed.py) is, published straight into
    the queue, a poison message: dead-lettered, no handler run, the reason logged; a body
    that is not UTF-8 travels base64-encoded, as the decoder reads it."""
    from tests.malformed import MALFORMED

    sent = []
    for name, body, _ in MALFORMED:
        if name in _NOT_QUEUEABLE_AS_TEXT:
            continue
        try:
            message = body.decode("utf-8")
        except UnicodeDecodeError:
            message = base64.b64encode(body).decode("ascii")
        sent.append(message)
        platform.inject_message(message)
    good = event_body(device="d-good-among-bad")
    platform.inject_message(good.decode())
    with caplog.at_level(logging.ERROR, logger="dtconnector"):
        platform.drain()
    assert [e.event_id for e in seen] == [event_id_of(good)]
    raw = [m if isinstance(m, str) else m.decode() for m in platform.raw_dead_letters()]
    assert sorted(raw) == sorted(sent)
    poison = [r.getMessage() for r in caplog.records if "not a DT event" in r.getMessage()]
    assert poison, "no poison message was logged"
    assert platform.queue_depth() == 0


def test_a_decoded_message_over_the_body_limit_is_poison(make_platform, seen):
    """Direct mode enforces DT_MAX_BODY_BYTES on the decoded body, as HTTP ingest does (413)."""
    platform = make_platform(DT_MAX_BODY_BYTES="2000")
    small = event_body(device="d-small")
    big = event_body(device="d-big", labels={"note": "x" * 2500})
    assert len(small) < 2000 < len(big)
    platform.inject_message(base64.b64encode(big).decode())
    platform.inject_message(small.decode())
    platform.drain()
    assert [e.event_id for e in seen] == [event_id_of(small)]
    assert [m if isinstance(m, str) else m.decode() for m in platform.raw_dead_letters()] == [base64.b64encode(big).decode()]
