"""The Cloudant sweeper on pouchdb-server: what it removes, what it must keep, and the
worker job running it."""

from __future__ import annotations

import json
import time

from core.ports import COMPLETED, IN_PROGRESS, Claim
from core.retention import Retention

RERUN_WINDOW_S = Retention().rerun_window_s  # the default rule: 14 days of dead letters + 1 day
from ibm_action import worker as worker_module
from ibm_action.claims import claim_to_json
from ibm_action.retention import CloudantSweeper

DAY = 86_400.0


def _docs(ibm):
    return ibm._worker.app().events


def _put(ibm, doc_id: str, claim: Claim | None = None, state: str | None = None, updated_at: float | None = None, body: str = "{}"):
    doc: dict = {}
    if claim is not None:
        doc["claim"] = claim_to_json(claim)
    if state is not None:
        doc["outbox"] = {"state": state, "eventId": doc_id, "body": body, "attempts": 1, "updatedAt": updated_at or time.time()}
    assert _docs(ibm).create(doc_id, doc)


def _ids(ibm) -> set[str]:
    docs = _docs(ibm)
    rows = docs.service.post_all_docs(db=docs.db).get_result()["rows"]
    return {r["id"] for r in rows if not r["id"].startswith("_design/")}


def test_sweep_removes_finished_documents_and_keeps_what_is_needed(ibm):
    now = time.time()
    _put(ibm, "done-expired", Claim(COMPLETED, now - 1, "v"), "done")
    _put(ibm, "done-live", Claim(COMPLETED, now + 60, "v"), "done")  # a live dedup decision
    _put(ibm, "pending-expired", Claim(COMPLETED, now - 1, "v"), "pending")  # the worker still needs it
    _put(ibm, "dead-recent", Claim(COMPLETED, now - 1, "v"), "dead", updated_at=now - DAY)
    _put(ibm, "dead-old", Claim(COMPLETED, now - 1, "v"), "dead", updated_at=now - 3 * DAY)
    _put(ibm, "unclaimed-done", None, "done")
    _put(ibm, "w_done", Claim(COMPLETED, now - 1, "v"))
    _put(ibm, "w_unfinished", Claim(IN_PROGRESS, now - 60, "v", ("h1",)))  # progress a redelivery needs
    _put(ibm, "w_abandoned", Claim(IN_PROGRESS, now - RERUN_WINDOW_S - 1, "v", ("h1",)))

    result = CloudantSweeper(_docs(ibm), dead_letter_retention_s=2 * DAY).sweep(now)

    assert result.removed == {"events": 3, "ledger": 2}
    assert _ids(ibm) == {"done-live", "pending-expired", "dead-recent", "w_unfinished"}


def test_a_document_rewritten_after_the_sweeper_read_it_is_kept(ibm, monkeypatch):
    now = time.time()
    _put(ibm, "k", Claim(COMPLETED, now - 1, "old"), "done")
    sweeper = CloudantSweeper(_docs(ibm), dead_letter_retention_s=DAY)
    real = sweeper._candidates

    def read_then_takeover(at, limit):
        pages = real(at, limit)
        # A DT retry takes the expired claim over meanwhile (a new _rev).
        assert ibm.claim_store.replace("k", "old", Claim(IN_PROGRESS, now + 8, "new"))
        return pages

    monkeypatch.setattr(sweeper, "_candidates", read_then_takeover)
    assert sweeper.sweep(now).removed == {}
    assert ibm.claim_store.get("k").version == "new"


def test_sweep_is_bounded_per_batch(ibm):
    now = time.time()
    for n in range(7):
        _put(ibm, f"w_k{n}", Claim(COMPLETED, now - 1, "v"))
    sweeper = CloudantSweeper(_docs(ibm), dead_letter_retention_s=DAY)
    first = sweeper.sweep(now, limit=5)
    assert (first.removed, first.more) == ({"ledger": 5}, True)
    assert sweeper.sweep(now, limit=5).removed == {"ledger": 2}


def test_the_once_job_sweeps_and_stats_reports_the_store(ibm, capsys):
    _put(ibm, "w_gone", Claim(COMPLETED, time.time() - 1, "v"))
    _put(ibm, "w_kept", Claim(COMPLETED, time.time() + 60, "v"))
    worker_module.reset()
    assert worker_module.main(["--once"]) == 0
    assert _ids(ibm) == {"w_kept"}
    assert worker_module.main(["--stats"]) == 0
    store = json.loads(capsys.readouterr().out)["store"]
    assert store["records"]["ledger"] == 1
    # doc_del_count: Cloudant counts the tombstones its deletes leave; pouchdb-server says 0.
    assert "tombstones" in store["records"]
    assert "claims_earliest_expiry" in store["oldest"]
    assert worker_module.main(["--dead-letters"]) == 0
    assert '"total": ' in capsys.readouterr().err


def test_an_id_after_its_window_is_queued_again_even_before_the_sweep(ibm):
    from tests.dt import event_body, event_id_of, signed
    from core.keys import store_key

    body = event_body()
    _put(ibm, store_key(event_id_of(body)), Claim(COMPLETED, time.time() - 1, "v"), "done", body=body.decode())
    assert ibm.deliver(body, signed(body)).status == 202  # a forgotten completion: a new event
    assert ibm.queue_depth() == 1
