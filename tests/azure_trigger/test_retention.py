"""The Table Storage sweeper on Azurite: what it removes, what it must keep."""

from __future__ import annotations

import time

from core.ports import COMPLETED, IN_PROGRESS, Claim
from core.retention import Retention

RERUN_WINDOW_S = Retention().rerun_window_s  # the default rule: 14 days of dead letters + 1 day
from azure_trigger.retention import TableSweeper, store_report


def test_sweep_removes_expired_claims_and_keeps_what_is_needed(azure):
    claims = azure.claim_store
    now = time.time()
    claims.create("gone", Claim(COMPLETED, now - 1, "a"))
    claims.create("live", Claim(COMPLETED, now + 60, "b"))
    claims.create("w_unfinished", Claim(IN_PROGRESS, now - 60, "c", ("h1",)))  # progress kept for redelivery
    claims.create("w_old", Claim(IN_PROGRESS, now - RERUN_WINDOW_S - 1, "d"))
    result = TableSweeper(claims).sweep(now)
    assert result.removed == {"claims": 2}
    assert claims.get("gone") is None and claims.get("w_old") is None
    assert claims.get("live") is not None and claims.get("w_unfinished") is not None


def test_sweep_is_bounded_per_batch(azure):
    claims = azure.claim_store
    now = time.time()
    for n in range(7):
        claims.create(f"k{n}", Claim(COMPLETED, now - 1, "v"))
    first = TableSweeper(claims).sweep(now, limit=5)
    assert (first.removed, first.more) == ({"claims": 5}, True)
    assert TableSweeper(claims).sweep(now, limit=5).removed == {"claims": 2}


def test_a_claim_taken_over_after_the_sweeper_read_it_is_kept(azure, monkeypatch):
    claims = azure.claim_store
    now = time.time()
    claims.create("k", Claim(COMPLETED, now - 1, "old"))
    sweeper = TableSweeper(claims)
    real = sweeper._expired_page

    def read_then_takeover(at, limit):
        page = real(at, limit)
        assert claims.replace("k", "old", Claim(IN_PROGRESS, now + 8, "new"))  # a DT retry, meanwhile
        return page

    monkeypatch.setattr(sweeper, "_expired_page", read_then_takeover)
    assert sweeper.sweep(now).removed == {}
    assert claims.get("k").version == "new"


def test_store_report_counts_rows(azure):
    now = time.time()
    azure.claim_store.create("e1", Claim(COMPLETED, now + 5, "v"))
    azure.claim_store.create("w_e1", Claim(COMPLETED, now + 9, "v"))
    report = store_report(azure.claim_store, azure.state_store.table)
    assert report.counts == {"claims": 1, "ledger": 1, "device_state": 0}
    assert report.oldest == {"claims (earliest expiry)": now + 5}


def test_stats_command_prints_the_store_size(azure, capsys):
    import json

    from azure_trigger import retention

    azure.claim_store.create("e1", Claim(COMPLETED, time.time() + 5, "v"))
    assert retention.main([]) == 0
    store = json.loads(capsys.readouterr().out)["store"]
    assert store["records"]["claims"] == 1 and store["total"] == 1
