"""Bounded storage on Table Storage, which has no TTL: core's `ExpiredRecordSweeper`.

The `sweep` timer function (function_app.py) runs it in the same app. One batch reads one
page of the dedup table's rows whose `expires_at` has passed and deletes those that
`core.retention` says nobody needs, each conditionally on the ETag it read (a claim taken
over since then has a new ETag and stays). Every claim is its own partition, so deletes
are single-row operations that never hold a partition ingest needs.

Dead letters are messages in the `<queue>-poison` Storage queue: the Functions host puts
them there with the queue's default time-to-live, 7 days, after which the service
deletes them. Device state is one row per (device, event type) and is never removed.
"""

from __future__ import annotations

from core.ports import StoreError
from core.retention import DEFAULT_SWEEP_BATCH, Retention, StoreReport, SweepResult

from .clients import translated
from .table_store import CLAIM_ROW, TableClaimStore


class TableSweeper:
    def __init__(self, claims: TableClaimStore, retention: Retention | None = None):
        self.table = claims.table
        self.retention = Retention.from_env() if retention is None else retention

    def _expired_page(self, now: float, limit: int) -> tuple[list, bool]:
        from azure.core.exceptions import ResourceNotFoundError

        client = self.table._client
        try:
            with translated("claim table expiry query"):
                pages = client.query_entities(
                    "RowKey eq @row and expires_at le @now",
                    parameters={"row": CLAIM_ROW, "now": float(now)},
                    results_per_page=limit,
                ).by_page()
                page = list(next(pages, []))
                return page, bool(pages.continuation_token)
        except StoreError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):  # no table yet: nothing stored
                return [], False
            raise

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult:
        rows, more = self._expired_page(now, limit)
        result = SweepResult(more=more)
        removed = 0
        for entity in rows:
            if not self.retention.is_removable(TableClaimStore._claim(entity), now):
                continue  # an unfinished claim in its grace period
            if self.table.delete(entity["PartitionKey"], CLAIM_ROW, entity.metadata["etag"]):
                removed += 1
        result.add("claims", removed)
        return result


def _rows(table, fields: list[str]) -> list:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        with translated("table scan"):
            return list(table._client.list_entities(select=fields))
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
        kind = "ledger" if entity["PartitionKey"].startswith(WORKER_NAMESPACE + "_") else "claims"
        counts[kind] += 1
        at = float(entity["expires_at"])
        earliest = at if earliest is None else min(earliest, at)
    counts["device_state"] = len(_rows(state_table, ["PartitionKey"]))
    return StoreReport(counts, {} if earliest is None else {"claims (earliest expiry)": earliest})


def main(argv: list[str] | None = None) -> int:
    """``python -m azure_trigger.retention``: print the store's size (JSON), with the app's
    settings in the environment (AzureWebJobsStorage or DT_STORAGE_CONNECTION, tables)."""
    import json
    import sys
    import time

    from core.config import ConfigError

    from .clients import AzureConfig, table_client
    from .table_store import TableClaimStore, TableDeviceStateStore

    try:
        config = AzureConfig.from_env()
    except ConfigError as exc:
        print(f"azure_trigger.retention: {exc}", file=sys.stderr)
        return 2
    claims = TableClaimStore(table_client(config.connection, config.dedup_table))
    state = TableDeviceStateStore(table_client(config.connection, config.state_table))
    print(json.dumps({"store": store_report(claims, state.table).to_dict(time.time())}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
