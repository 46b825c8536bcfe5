"""The Table Storage sweeper on Azurite: what it removes, what it must keep."""

from __future__ import annotations

import time

from azure_trigger.retention import TableSweeper, reindex, store_report
from azure_trigger.table_store import EXPIRY_PREFIX
from core.ports import COMPLETED, IN_PROGRESS, Claim
from core.retention import Retention

RERUN_WINDOW_S = Retention().rerun_window_s  # the default rule: 14 days of dead letters + 1 day


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
    real_get = sweeper.table.get

    def read_then_takeover(partition, row):
        entity = real_get(partition, row)
        monkeypatch.undo()  # the sweeper's read is done; the takeover reads for itself
        assert claims.replace("k", "old", Claim(IN_PROGRESS, now + 8, "new"))  # a DT retry, meanwhile
        return entity

    monkeypatch.setattr(sweeper.table, "get", read_then_takeover)
    assert sweeper.sweep(now).removed == {}
    assert claims.get("k").version == "new"
    assert _index(azure) == {"k"}  # filed again: a later sweep looks at it again


def _index(azure, upto: float | None = None) -> set[str]:
    """The claim keys filed in the expiry index (at or before `upto`)."""
    rows = azure.claim_store.table.client.query_entities(
        "PartitionKey ge @first", parameters={"first": EXPIRY_PREFIX}, select=["PartitionKey", "RowKey"]
    )
    return {r["RowKey"] for r in rows if upto is None or int(r["PartitionKey"][len(EXPIRY_PREFIX):]) <= upto}


def test_the_sweep_reads_the_expiry_index_never_the_claims(azure, monkeypatch):
    """Expired claims are found through the index, by a range query over its partitions:
    no query of the claim rows' columns (the old full-table scan), and a claim not yet
    removable is re-filed after now, so no entry is read twice in one sweep."""
    claims = azure.claim_store
    now = time.time()
    for n in range(30):
        claims.create(f"live{n}", Claim(IN_PROGRESS, now - 60, "v", ("h",)))  # kept for the rerun window
    claims.create("gone", Claim(COMPLETED, now - 1, "v"))
    client = claims.table.client
    filters: list[str] = []
    real_query = client.query_entities
    monkeypatch.setattr(client, "query_entities", lambda f, **kw: filters.append(f) or real_query(f, **kw))
    sweeper = TableSweeper(claims)
    first = sweeper.sweep(now + 14 * 3600, limit=10)  # past the dedup window the index was filed for
    assert filters and all(f == "PartitionKey ge @first and PartitionKey le @last" for f in filters)
    assert first.removed == {"claims": 1} and first.more
    result = first
    rounds = 1
    while result.more:
        result = sweeper.sweep(now + 14 * 3600, limit=10)
        rounds += 1
    assert rounds <= 4  # 31 entries in batches of 10: each read once
    assert _index(azure, upto=now + 14 * 3600) == set()
    assert _index(azure) == {f"live{n}" for n in range(30)}  # re-filed at their removable moment
    assert sweeper.sweep(now + 14 * 3600).removed == {}


def test_an_index_entry_without_its_claim_is_dropped(azure):
    claims = azure.claim_store
    now = time.time()
    claims.create("released", Claim(IN_PROGRESS, now + 8, "v"))
    assert claims.delete("released", "v")  # ingest gave the id back (its enqueue failed)
    assert TableSweeper(claims).sweep(now + 14 * 3600).removed == {}
    assert _index(azure) == set()


def test_store_report_counts_rows(azure):
    now = time.time()
    azure.claim_store.create("e1", Claim(COMPLETED, now + 5, "v"))
    azure.claim_store.create("w_e1", Claim(COMPLETED, now + 9, "v"))
    report = store_report(azure.claim_store, azure.state_store.table)
    assert report.counts == {"claims": 1, "ledger": 1, "device_state": 0}
    assert report.oldest == {"claims_earliest_expiry": now + 5}


def test_stats_command_prints_the_store_size(azure, capsys):
    import json

    from azure_trigger import retention

    azure.claim_store.create("e1", Claim(COMPLETED, time.time() + 5, "v"))
    assert retention.main([]) == 0
    store = json.loads(capsys.readouterr().out)["store"]
    assert store["records"]["claims"] == 1 and store["total"] == 1


def _forget_index(azure) -> None:
    """What a deployment upgraded from a version without the expiry index holds: claims only."""
    table = azure.claim_store.table
    for row in table.client.query_entities("PartitionKey ge @first", parameters={"first": EXPIRY_PREFIX}):
        table.delete_any(row["PartitionKey"], row["RowKey"])


def test_claims_from_before_the_index_are_swept_once_reindexed(azure):
    claims = azure.claim_store
    now = time.time()
    claims.create("old-done", Claim(COMPLETED, now - 1, "a"))
    claims.create("live", Claim(COMPLETED, now + 60, "b"))
    claims.create("w_unfinished", Claim(IN_PROGRESS, now - 60, "c", ("h1",)))
    _forget_index(azure)
    assert TableSweeper(claims).sweep(now).removed == {}  # invisible to the sweep: kept forever
    assert reindex(claims) == 3
    assert reindex(claims) == 3 and len(_index(azure)) == 3  # repeatable: one entry per claim
    assert TableSweeper(claims).sweep(now).removed == {"claims": 1}
    assert claims.get("old-done") is None and claims.get("live") is not None
    assert TableSweeper(claims).sweep(now + 61).removed == {"claims": 1}  # each at its own time
    assert claims.get("w_unfinished") is not None  # kept for a requeue for the retention rule's span
    assert TableSweeper(claims).sweep(now + RERUN_WINDOW_S).removed == {"claims": 1}


def test_the_reindex_command_says_how_many_it_filed(azure, capsys):
    import json

    from azure_trigger import retention

    azure.claim_store.create("e1", Claim(COMPLETED, time.time() + 5, "v"))
    _forget_index(azure)
    assert retention.main(["--reindex"]) == 0
    captured = capsys.readouterr()
    assert "filed 1 claims in the expiry index" in captured.err
    assert json.loads(captured.out)["store"]["records"]["claims"] == 1
    assert _index(azure) == {"e1"}
