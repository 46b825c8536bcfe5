"""The store's size on Redis, so an operator sees growth (`python -m heroku.worker
--dead-letters` prints it): claims and ledger entries (each expires by itself, see
`heroku.stores`), dead letters (trimmed by the worker after ``DT_DEAD_LETTER_RETENTION_S``)
and device state fields (one per device and event type)."""

from __future__ import annotations

import json

from redis.exceptions import RedisError

from core.ports import StoreError
from core.retention import StoreReport
from core.worker import WORKER_NAMESPACE

from .connection import describe


def store_report(client, prefix: str) -> StoreReport:
    """One SCAN over this deployment's keys (for operators, not for the request path)."""
    counts = {"claims": 0, "ledger": 0, "dead_letters": 0, "device_state": 0}
    oldest: dict[str, float] = {}
    try:
        for key in client.scan_iter(match=prefix + "c:*", count=1000):
            name = key.decode()[len(prefix) + 2 :]
            counts["ledger" if name.startswith(WORKER_NAMESPACE + "_") else "claims"] += 1
        for key in client.scan_iter(match=prefix + "s:*", count=1000):
            counts["device_state"] += client.hlen(key)
        counts["dead_letters"] = client.llen(prefix + "dead")
        first = client.lindex(prefix + "dead", 0)
    except RedisError as exc:
        raise StoreError(f"redis store report failed: {describe(exc)}") from exc
    if first is not None:
        oldest["dead_letters"] = float(json.loads(first)["deadAt"])
    return StoreReport(counts, oldest)
