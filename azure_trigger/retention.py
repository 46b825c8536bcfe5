"""Bounded storage on Table Storage, which has no TTL: core's `ExpiredRecordSweeper`.

The `sweep` timer function (function_app.py) runs it in the same app. Table Storage has no
secondary index either, so the claim store keeps one (`azure_trigger.table_store`): every
claim is filed, when created, under the second it may first become removable. A batch
reads the index in key order up to now (a range query over the index partitions, never a
scan of the claims), and for each entry reads its claim and applies `core.retention`'s
rule: a removable claim is deleted conditionally on the ETag it read (a claim taken over
since then has a new ETag and stays), an entry whose claim is gone is dropped, and a
claim not removable yet is re-filed under the moment it will be, always after now, so a
sweep never reads the same entry twice. Every claim is its own partition, so deletes are
single-row operations that never hold a partition ingest needs.

Dead letters are messages in the `<queue>-poison` Storage queue: the Functions host puts
them there with the queue's default time-to-live, 7 days, after which the service
deletes them. Device state is one row per (device, event type) and is never removed.
"""

from __future__ import annotations

import math

from core.ports import StoreError
from core.retention import DEFAULT_SWEEP_BATCH, Retention, StoreReport, SweepResult

from .clients import translated
from .table_store import CLAIM_ROW, EXPIRY_PREFIX, TableClaimStore, claim_of, expiry_partition


#: Claims settled at once within a batch (each is a read and a conditional delete).
SETTLE_CONCURRENCY = 8


class TableSweeper:
    def __init__(self, claims: TableClaimStore, retention: Retention | None = None):
        self.claims = claims
        self.table = claims.table
        self.retention = Retention.from_env() if retention is None else retention

    def _due_entries(self, now: float, limit: int) -> tuple[list, bool]:
        """Up to `limit` index entries filed at or before `now`, oldest first, and whether
        more may follow."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with translated("expiry index query"):
                pages = self.table.client.query_entities(
                    "PartitionKey ge @first and PartitionKey le @last",
                    parameters={"first": EXPIRY_PREFIX, "last": expiry_partition(now)},
                    results_per_page=limit,
                    select=["PartitionKey", "RowKey"],
                ).by_page()
                entries: list = []
                for page in pages:  # a range query may answer a page short, even empty
                    entries.extend(page)
                    if len(entries) >= limit:
                        return entries[:limit], True
                return entries, False
        except StoreError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):  # no table yet: nothing stored
                return [], False
            raise

    def _settle(self, key: str, now: float, later: int) -> bool:
        """Apply the rule to one indexed claim: True if it was removed."""
        claim_row = self.table.get(key, CLAIM_ROW)
        if claim_row is None:
            return False  # released or removed already: only its entry is left
        claim = claim_of(claim_row)
        if not self.retention.is_removable(claim, now):
            self.claims.index(key, max(self.retention.removable_at(claim), later))
            return False
        if self.table.delete(key, CLAIM_ROW, claim_row.metadata["etag"]):
            return True
        self.claims.index(key, later)  # taken over since we read it: look again later
        return False

    def _drop_entries(self, entries: list) -> None:
        """Delete index entries, one transaction per partition (one second's entries)."""
        from azure.data.tables import TableTransactionError

        by_partition: dict[str, list[str]] = {}
        for entry in entries:
            by_partition.setdefault(entry["PartitionKey"], []).append(entry["RowKey"])
        for partition, keys in by_partition.items():
            for i in range(0, len(keys), 100):  # a transaction holds at most 100 operations
                chunk = keys[i : i + 100]
                try:
                    with translated("expiry index delete"):
                        self.table.client.submit_transaction(
                            [("delete", {"PartitionKey": partition, "RowKey": key}) for key in chunk]
                        )
                except StoreError as exc:
                    if not isinstance(exc.__cause__, TableTransactionError):
                        raise
                    for key in chunk:  # one was gone already (a concurrent sweep): one by one
                        self.table.delete_any(partition, key)

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult:
        from concurrent.futures import ThreadPoolExecutor

        entries, more = self._due_entries(now, limit)
        result = SweepResult(more=more)
        later = math.floor(now) + 1  # re-filed entries land after this sweep's range
        # Each claim is its own partition: they are settled concurrently, a few round trips
        # each, so a batch takes a few round trips' time however many it holds.
        with ThreadPoolExecutor(max_workers=SETTLE_CONCURRENCY) as pool:
            removed = sum(pool.map(lambda entry: self._settle(entry["RowKey"], now, later), entries))
        self._drop_entries(entries)
        result.add("claims", removed)
        return result


def reindex(claims: TableClaimStore, retention: Retention | None = None) -> int:
    """File every claim in the expiry index under the moment it becomes removable; how many.

    Claims written by a version before the index existed are not in it, so the sweep never
    finds them: run this once after upgrading such a deployment (``python -m
    azure_trigger.retention --reindex``). It scans the claims, the one full scan there is,
    and is safe to repeat or to run beside ingest and the sweep (filing is an idempotent
    upsert, and the sweep re-reads every claim it finds before removing it)."""
    retention = Retention.from_env() if retention is None else retention
    filed = 0
    for entity in _rows(claims.table, ["PartitionKey", "RowKey", "status", "expires_at", "version", "done"]):
        if entity["PartitionKey"].startswith(EXPIRY_PREFIX) or entity["RowKey"] != CLAIM_ROW:
            continue
        claims.index(entity["PartitionKey"], retention.removable_at(claim_of(entity)))
        filed += 1
    return filed


def _rows(table, fields: list[str]) -> list:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        with translated("table scan"):
            return list(table.client.list_entities(select=fields))
    except StoreError as exc:
        if isinstance(exc.__cause__, ResourceNotFoundError):  # no table yet: nothing stored
            return []
        raise


def store_report(claims: TableClaimStore, state_table) -> StoreReport:
    """Rows by kind and the earliest claim expiry: a full scan, for operators only."""
    from core.worker import WORKER_NAMESPACE

    counts = {"claims": 0, "ledger": 0, "device_state": 0}
    earliest: float | None = None
    for entity in _rows(claims.table, ["PartitionKey", "expires_at"]):
        if entity["PartitionKey"].startswith(EXPIRY_PREFIX):
            continue  # the expiry index: one small row per claim, counted with its claim
        kind = "ledger" if entity["PartitionKey"].startswith(WORKER_NAMESPACE + "_") else "claims"
        counts[kind] += 1
        at = float(entity["expires_at"])
        earliest = at if earliest is None else min(earliest, at)
    counts["device_state"] = len(_rows(state_table, ["PartitionKey"]))
    return StoreReport(counts, {} if earliest is None else {"claims_earliest_expiry": earliest})


def main(argv: list[str] | None = None) -> int:
    """``python -m azure_trigger.retention [--reindex]``: print the store's size (JSON), with
    the app's settings in the environment (AzureWebJobsStorage or DT_STORAGE_CONNECTION,
    tables); ``--reindex`` first files every claim in the expiry index (see `reindex`)."""
    import argparse
    import json
    import sys
    import time

    from core.config import ConfigError

    from .clients import AzureConfig, table_client
    from .table_store import TableClaimStore, TableDeviceStateStore

    parser = argparse.ArgumentParser(prog="python -m azure_trigger.retention", description=main.__doc__)
    parser.add_argument("--reindex", action="store_true",
                        help="file every claim in the expiry index first (once, after upgrading from a version without it)")
    args = parser.parse_args(argv)
    try:
        config = AzureConfig.from_env()
    except ConfigError as exc:
        print(f"azure_trigger.retention: {exc}", file=sys.stderr)
        return 2
    claims = TableClaimStore(table_client(config.connection, config.dedup_table))
    state = TableDeviceStateStore(table_client(config.connection, config.state_table))
    try:
        if args.reindex:
            print(f"azure_trigger.retention: filed {reindex(claims)} claims in the expiry index", file=sys.stderr)
    except (StoreError, ConfigError) as exc:
        print(f"azure_trigger.retention: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"store": store_report(claims, state.table).to_dict(time.time())}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
