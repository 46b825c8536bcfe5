"""What is specific to the Cloudant design: one document per event holding the dedup
claim and the outbox, the changes-feed worker with its checkpoint, retries and dead
letters, and the SDK's errors mapped to StoreError."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from contextlib import redirect_stdout

import pytest

from core import on
from core.keys import store_key
from core.ports import COMPLETED, QueueError, StoreError
from ibm_action import worker as worker_module
from tests.dt import event_body, event_id_of, signed


class Counting:
    """Forwards to the real SDK client, counting the operations called."""

    def __init__(self, real):
        self._real = real
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


def _event_doc(ibm, body):
    return ibm.ingest.outbox.docs.get(store_key(event_id_of(body)))


def test_one_document_holds_the_claim_and_the_outbox(ibm):
    body = event_body()
    assert ibm.deliver(body, signed(body)).status == 202
    doc = _event_doc(ibm, body)
    assert doc["claim"]["status"] == COMPLETED
    assert doc["outbox"]["state"] == "pending"
    assert doc["outbox"]["body"] == body.decode()
    assert doc["outbox"]["eventId"] == event_id_of(body)
    ibm.drain()
    doc = _event_doc(ibm, body)
    assert doc["outbox"]["state"] == "done" and doc["outbox"]["attempts"] == 1
    # The worker's ledger is its own document, never in the outbox.
    ledger = ibm.ingest.outbox.docs.get(store_key(event_id_of(body), "w"))
    assert ledger["claim"]["status"] == COMPLETED and "outbox" not in ledger


def test_a_new_event_costs_one_conditional_write_and_no_read(ibm):
    counting = Counting(ibm.ingest.claims.docs.service)
    ibm.ingest.claims.docs.service = counting
    ibm.ingest.outbox.docs.service = counting
    body = event_body()
    assert ibm.deliver(body, signed(body)).status == 202
    # the claim, written completed, and the outbox entry: one create
    assert counting.calls == Counter(put_document=1)


def test_a_duplicate_costs_no_write(ibm):
    body = event_body()
    assert ibm.deliver(body, signed(body)).status == 202
    counting = Counting(ibm.ingest.claims.docs.service)
    ibm.ingest.claims.docs.service = counting
    ibm.ingest.outbox.docs.service = counting
    assert ibm.deliver(body, signed(body)).status == 200
    assert counting.calls["put_document"] == 1  # the refused create (409)
    assert counting.calls["delete_document"] == 0


def test_enqueue_failure_leaves_no_document_behind(ibm):
    body = event_body()
    with ibm.broken("queue"):
        assert ibm.deliver(body, signed(body)).status == 503
    assert _event_doc(ibm, body) is None


def test_released_claim_never_deletes_a_stored_event(ibm):
    """If the claim is released after the body was stored, only the claim goes."""
    from core.ports import IN_PROGRESS, Claim

    claims, outbox = ibm.ingest.claims, ibm.ingest.outbox
    key = store_key("ev-released")
    assert claims.create(key, Claim(IN_PROGRESS, time.time() + 30, "v1"))
    outbox.enqueue('{"x":1}', event_id="ev-released")
    assert claims.delete(key, "v1") is True
    assert claims.get(key) is None
    assert outbox.docs.get(key)["outbox"]["body"] == '{"x":1}'
    # The next claim on it (DT's retry) is accepted, and enqueue is then a no-op.
    assert claims.create(key, Claim(IN_PROGRESS, time.time() + 30, "v2"))
    assert claims.get(key).version == "v2"


def test_state_version_is_stored_as_text_and_compared_exactly(ibm):
    from core.ports import DeviceState

    store = ibm.state_store
    big = 1_800_000_000_000_000_001
    assert store.put_if_newer(DeviceState("d", "co2", big, "e1", "t", {"n": big}))
    assert not store.put_if_newer(DeviceState("d", "co2", big - 1, "e0", "t", {}))  # a double would say equal
    doc = store.docs.get("d:co2")
    assert doc["version"] == "01800000000000000001"
    assert store.get_device("d")[0].data == {"n": big}


def test_checkpoint_means_a_second_run_reads_nothing_again(ibm, seen):
    body = event_body()
    ibm.deliver(body, signed(body))
    ibm.drain()
    assert len(seen) == 1
    checkpoint = ibm.ingest.outbox.docs.get_local("dt-worker")
    assert checkpoint["since"]
    runner = ibm.runner()
    counting = Counting(runner.app.events.service)
    runner.app.events.service = counting
    runner.drain()
    assert counting.calls["get_document"] == 0  # nothing delivered, nothing looked up
    assert len(seen) == 1


def test_retry_waits_for_its_backoff_and_the_next_run_sweeps_it_up(make_ibm):
    ibm = make_ibm(DT_RETRY_DELAY_S="60")
    calls = []

    @on("temperature")
    def flaky(event):
        calls.append(event.event_id)
        if len(calls) == 1:
            raise RuntimeError("downstream is down")

    body = event_body()
    ibm.deliver(body, signed(body))
    started = time.monotonic()
    ibm.drain()
    assert time.monotonic() - started < 20  # did not sit out the 60 s backoff
    box = _event_doc(ibm, body)["outbox"]
    assert box["state"] == "pending" and box["attempts"] == 1
    assert box["retryAt"] > time.time() + 50
    assert box["lastError"].startswith("HandlerFailed")
    # A later run (its clock past retryAt): the change is before the checkpoint, so only
    # the sweep can find it.
    later = worker_module.FeedRunner(worker_module.app(), clock=lambda: time.time() + 120)
    later.drain()
    assert calls == [event_id_of(body)] * 2
    assert _event_doc(ibm, body)["outbox"]["state"] == "done"


def test_poison_message_is_dead_lettered_at_once(ibm):
    def poison(doc):
        return {"outbox": {"state": "pending", "eventId": "poison-1", "body": "not a DT event", "attempts": 0}}

    ibm.ingest.outbox.docs.update("poison-1", poison)
    ibm.drain()
    [letter] = ibm.ingest.outbox.dead_letters()
    assert letter["eventId"] == "poison-1" and letter["attempts"] == 1
    assert letter["lastError"].startswith("PoisonMessage")


def test_dead_letter_cli_lists_and_requeues(ibm):
    @on("*")
    def broken(event):
        raise RuntimeError("bug")

    body = event_body()
    ibm.deliver(body, signed(body))
    ibm.drain()
    out = io.StringIO()
    with redirect_stdout(out):
        assert worker_module.main(["--dead-letters"]) == 1  # the count, for a cron check
    [line] = out.getvalue().splitlines()
    letter = json.loads(line)
    assert letter["eventId"] == event_id_of(body) and letter["attempts"] == ibm.max_attempts
    assert "body" not in letter
    with redirect_stdout(io.StringIO()):
        assert worker_module.main(["--dead-letters", "--requeue"]) == 0
    assert ibm.queue_depth() == 1 and ibm.dead_letters() == []


def test_once_cli_drains(ibm, seen):
    body = event_body()
    ibm.deliver(body, signed(body))
    assert worker_module.main(["--once"]) == 0
    assert [e.event_id for e in seen] == [event_id_of(body)]


def test_continuous_mode_follows_the_feed(make_ibm, seen):
    # pouchdb-server's longpoll ignores `timeout` and answers on the next change: the
    # test wakes it with a change after asking the worker to stop.
    ibm = make_ibm(DT_CHANGES_TIMEOUT_S="1")
    runner = ibm.runner()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
    thread.start()
    body = event_body()
    assert ibm.deliver(body, signed(body)).status == 202
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    ibm.ingest.outbox.docs.create("wake-up", {"note": "wakes a longpoll"})
    thread.join(20)
    assert not thread.is_alive()
    assert [e.event_id for e in seen] == [event_id_of(body)]
    assert ibm.queue_depth() == 0


def test_api_exception_503_is_a_store_error(ibm):
    from ibm_cloud_sdk_core import ApiException

    class Unavailable:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise ApiException(503, message="Service Unavailable")

            return fail

    docs = ibm.ingest.outbox.docs
    real, docs.service = docs.service, Unavailable()
    try:
        with pytest.raises(QueueError) as info:
            ibm.ingest.outbox.enqueue("{}", event_id="e-503")
        assert isinstance(info.value.__cause__, StoreError)
        assert "503" in str(info.value)
        with pytest.raises(StoreError):
            ibm.ingest.outbox.docs.get("x")
    finally:
        docs.service = real


def test_connection_error_is_chained_from_the_sdk(ibm):
    import requests

    with ibm.broken("claims"):
        with pytest.raises(StoreError) as info:
            ibm.claim_store.get("anything")
    cause = info.value.__cause__
    assert isinstance(cause, requests.exceptions.ConnectionError)
    assert "Cloudant unreachable" in str(info.value)


def test_the_harness_counts_past_the_stand_ins_first_page(ibm):
    """pouchdb-server ignores Mango's bookmark, so outbox.depth() sees one page of 200
    there (real Cloudant pages on); the contract suite's queue_depth must see them all."""
    for n in range(230):
        body = event_body(event_id=f"page-{n:04d}")
        assert ibm.deliver(body, signed(body)).status == 202
    assert ibm.queue_depth() == 230
    assert ibm.ingest.outbox.depth() == 200  # the stand-in difference this steps around


def test_dead_letter_check_exits_zero_when_nothing_is_dead_lettered(ibm):
    body = event_body()
    ibm.deliver(body, signed(body))
    ibm.drain()
    with redirect_stdout(io.StringIO()) as out:
        assert worker_module.main(["--dead-letters"]) == 0
    assert out.getvalue() == ""
