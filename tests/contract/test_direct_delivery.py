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
