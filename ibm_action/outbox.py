"""core's `EventQueue` on Cloudant: the outbox is the `outbox` field of the event's own
document, the one whose `_id` (the eventId's store key) holds the dedup claim.

Ingest: a new event's document is created with its claim and its outbox entry (the body,
``state: pending``) in one write, core's `AtomicOutbox` (409 = duplicate); marking the
claim completed is a second write. Only taking over an expired claim writes the claim and
then (`enqueue`, conditionally on the claim's `_rev`) the body. So the dedup record and
the outbox are one document and every transition is one atomic document write: there is
never a queued event without its dedup record.

Worker (`ibm_action.worker`): follows the database's changes feed, picks documents whose
outbox is `pending`, and marks them `done`, or back to `pending` with one more attempt
(which makes the document appear in the feed again: that is the redelivery), or `dead`.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from core.keys import store_key
from core.ports import Claim, QueueError, StoreError

from .claims import claim_to_json
from .cloudant import UNCHANGED, Docs

PENDING = "pending"
DONE = "done"
DEAD = "dead"

#: The Mango index the worker creates for its recovery sweep and the dead-letter listing.
INDEX_NAME = "dt-outbox-state"
INDEX_FIELDS = ["outbox.state"]


def outbox_of(doc: dict | None) -> dict | None:
    box = doc.get("outbox") if isinstance(doc, dict) else None
    return box if isinstance(box, dict) else None


def is_pending(doc: dict | None) -> bool:
    box = outbox_of(doc)
    return bool(box) and box.get("state") == PENDING and isinstance(box.get("body"), str)


class CloudantOutbox:
    def __init__(self, docs: Docs, clock: Callable[[], float] = time.time):
        self.docs = docs
        self._clock = clock

    # --- the EventQueue and AtomicOutbox ports (ingest) --------------------------------

    def _entry(self, message: str, event_id: str) -> dict:
        now = self._clock()
        return {
            "state": PENDING,
            "eventId": event_id,
            "body": message,
            "attempts": 0,
            "enqueuedAt": now,
            "updatedAt": now,
        }

    def claim_and_enqueue(self, key: str, claim: Claim, message: str, *, event_id: str) -> bool:
        """A new event: its claim and its outbox entry in one document, one write (409 =
        duplicate). A document left without a claim (released after its body was stored)
        gets one, and the entry if it lacks it, with one conditional write."""
        entry = self._entry(message, event_id)
        try:
            if self.docs.create(key, {"claim": claim_to_json(claim), "outbox": entry}):
                return True

            def add_if_unclaimed(doc):
                if doc is None or doc.get("claim") is not None:
                    return None
                doc["claim"] = claim_to_json(claim)
                doc.setdefault("outbox", entry)
                return doc

            return self.docs.update(key, add_if_unclaimed)
        except StoreError as exc:
            raise QueueError(str(exc)) from exc

    def enqueue(self, message: str, *, event_id: str) -> None:
        """After a takeover of an expired claim: store the body in the claim's document."""

        def add_body(doc):
            doc = doc if doc is not None else {}
            box = outbox_of(doc)
            if box and box.get("state") in (PENDING, DONE) and box.get("body") == message:
                return UNCHANGED  # already durably queued
            doc["outbox"] = self._entry(message, event_id)
            return doc

        try:
            self.docs.update(store_key(event_id), add_body)
        except StoreError as exc:
            raise QueueError(str(exc)) from exc

    # --- what the worker and operators need -----------------------------------------

    def settle(self, doc: dict, state: str, *, attempts: int, error: str | None = None, retry_at: float | None = None) -> bool:
        """Record the outcome of one delivery of `doc` (as the worker read it). False if the
        document moved on meanwhile (another worker settled that delivery)."""
        seen = outbox_of(doc) or {}
        seen_attempts = seen.get("attempts", 0)
        now = self._clock()

        def record(current):
            box = outbox_of(current)
            if not box or box.get("state") != PENDING or box.get("attempts", 0) != seen_attempts:
                return None
            box = dict(box, state=state, attempts=attempts, updatedAt=now)
            box.pop("retryAt", None)
            if error is not None:
                box["lastError"] = error[:500]
            if retry_at is not None:
                box["retryAt"] = retry_at
            current["outbox"] = box
            return current

        return self.docs.update(doc["_id"], record, known=doc)

    def with_state(self, state: str, fields: list[str] | None = None) -> Iterator[dict]:
        return self.docs.find({"outbox.state": state}, fields)

    def depth(self) -> int:
        return sum(1 for _ in self.with_state(PENDING, ["_id"]))

    def dead_letters(self) -> list[dict]:
        return [
            {k: v for k, v in (outbox_of(d) or {}).items() if k != "body"} | {"id": d["_id"]}
            for d in self.with_state(DEAD)
        ]

    def requeue(self, doc_id: str) -> bool:
        """Put a dead-lettered event back in the outbox (after the handler was fixed)."""

        def revive(doc):
            box = outbox_of(doc)
            if not box or box.get("state") != DEAD:
                return None
            doc["outbox"] = dict(box, state=PENDING, attempts=0, updatedAt=self._clock())
            doc["outbox"].pop("retryAt", None)
            return doc

        return self.docs.update(doc_id, revive)
