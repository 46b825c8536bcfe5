"""Bounded storage on Cloudant, which has no TTL: core's `ExpiredRecordSweeper`, run by the
worker job (every `DT_SWEEP_INTERVAL_S` while following the feed, and after each
``--once`` run, so a Code Engine cron subscription of ``--once`` sweeps too).

An event's document (its dedup claim and its outbox entry with the body) may go once
both are finished with: the claim is removable by `core.retention`'s rule and the outbox
entry is `done` (or `dead` for longer than ``DT_DEAD_LETTER_RETENTION_S``). A `pending`
entry is never removed. A ledger document (`w_` keys) goes with its claim. Each batch is
one Mango query (index `dt-claim-expiry` on `claim.expiresAt`, created by the worker at
start) and one `_bulk_docs` delete conditional on each document's `_rev`: a document
written since it was read (a takeover, a settle) stays.

Space: Cloudant compacts automatically, so the deleted bodies' space returns. A deleted
document leaves a tombstone (its id and revision, tens of bytes) that Cloudant keeps: it
offers no `_purge` (neither does pouchdb-server, the test stand-in), only a filtered
replication into a new database (see the IBM README). `store_report` counts them.
"""

from __future__ import annotations

from core.ports import COMPLETED, IN_PROGRESS
from core.retention import DEFAULT_SWEEP_BATCH, Retention, StoreReport, SweepResult
from core.worker import WORKER_NAMESPACE

from .claims import claim_from_json
from .cloudant import Docs
from .outbox import DEAD, DONE, outbox_of

EXPIRY_INDEX_NAME = "dt-claim-expiry"
EXPIRY_INDEX_FIELDS = ["claim.expiresAt"]
_FIELDS = ["_id", "_rev", "claim", "outbox.state", "outbox.updatedAt"]


class CloudantSweeper:
    def __init__(self, docs: Docs, dead_letter_retention_s: float):
        self.docs = docs
        self.retention = Retention(dead_letter_retention_s)

    def removable(self, doc: dict, now: float) -> bool:
        """`core.retention`'s rule for one document: the claim (if any) and the outbox
        entry (if any) must both be finished with."""
        claim = claim_from_json(doc.get("claim"))
        if claim is not None and not self.retention.is_removable(claim, now):
            return False
        box = outbox_of(doc)
        if box is None:
            return claim is not None  # a ledger document (a bare document has nothing to say)
        state = box.get("state")
        if state == DONE:
            return True
        if state == DEAD:
            return float(box.get("updatedAt") or 0.0) + self.retention.dead_letter_s <= now
        return False  # pending: the worker still needs it

    def _candidates(self, now: float, limit: int) -> list[list[dict]]:
        oldest_first = [{"claim.expiresAt": "asc"}]
        finished = {"$or": [{"outbox": {"$exists": False}}, {"outbox.state": DONE}]}
        completed = self.docs.find_page(
            {"claim.expiresAt": {"$lte": now}, "claim.status": COMPLETED, **finished}, _FIELDS, limit, oldest_first
        )
        unfinished = self.docs.find_page(
            {"claim.expiresAt": {"$lte": now - self.retention.rerun_window_s}, "claim.status": IN_PROGRESS, **finished},
            _FIELDS,
            limit,
            oldest_first,
        )
        dead = self.docs.find_page(
            {"outbox.state": DEAD, "outbox.updatedAt": {"$lte": now - self.retention.dead_letter_s}}, _FIELDS, limit
        )
        unclaimed = self.docs.find_page({"outbox.state": DONE, "claim": {"$exists": False}}, _FIELDS, limit)
        return [completed, unfinished, dead, unclaimed]

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult:
        pages = self._candidates(now, limit)
        seen: set[str] = set()
        chosen = []
        for doc in (d for page in pages for d in page):
            if doc["_id"] not in seen and self.removable(doc, now):
                seen.add(doc["_id"])
                chosen.append(doc)
        deleted = set(self.docs.delete_many(chosen))
        result = SweepResult(more=any(len(page) >= limit for page in pages) and bool(deleted))
        ledger = sum(1 for i in deleted if i.startswith(WORKER_NAMESPACE + "_"))
        result.add("ledger", ledger)
        result.add("events", len(deleted) - ledger)
        return result


def store_report(events: Docs, state: Docs) -> StoreReport:
    """Documents by kind (event documents, with their claim and outbox entry; ledger
    documents; device state; tombstones), from one `_all_docs` pass (for operators), with
    the earliest claim expiry and the oldest dead letter."""
    counts = {"events": 0, "ledger": 0}
    oldest: dict[str, float] = {}
    rows = events.call(
        "listing documents", lambda: events.service.post_all_docs(db=events.db, include_docs=True)
    ).get("rows", [])
    for row in rows:
        doc = row.get("doc") or {}
        if row["id"].startswith("_design/"):
            continue
        kind = "ledger" if row["id"].startswith(WORKER_NAMESPACE + "_") else "events"
        counts[kind] += 1
        box = outbox_of(doc) or {}
        if box.get("state") == DEAD:
            at = float(box.get("updatedAt") or 0.0)
            oldest["dead_letters"] = min(oldest.get("dead_letters", at), at)
        claim = claim_from_json(doc.get("claim"))
        if claim is not None:
            key = "claims_earliest_expiry"
            oldest[key] = min(oldest.get(key, claim.expires_at), claim.expires_at)
    counts["tombstones"] = int(events.info().get("doc_del_count", 0))
    counts["device_state"] = int(state.info().get("doc_count", 0))
    return StoreReport(counts, oldest)
