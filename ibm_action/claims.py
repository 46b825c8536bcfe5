"""core's `ClaimStore` on Cloudant: the claim lives in the `claim` field of the event's
document, whose `_id` is the store key, next to the outbox fields (`ibm_action.outbox`).

- create: PUT without `_rev`: 201 stored, 409 exists (the dedup). A document that exists
  without a claim (its claim was released after the event was already stored) gets one
  with a conditional write instead.
- replace/delete: read, compare `claim.version`, write with the read `_rev`; a 409 means
  someone wrote in between, so read and compare again.
- delete removes the whole document, unless it carries an outbox entry (the event is
  durably stored and must not be lost): then only the claim is removed.

The worker's ledger (`w_` keys) uses the same class on the same database: those documents
never get outbox fields, so the worker ignores them in the changes feed.
"""

from __future__ import annotations

from core.ports import COMPLETED, IN_PROGRESS, Claim

from .cloudant import DELETE, Docs

DONE = "done"  # ibm_action.outbox.DONE (that module imports this one)


def claim_to_json(claim: Claim) -> dict:
    return {
        "status": claim.status,
        "expiresAt": claim.expires_at,
        "version": claim.version,
        "done": list(claim.done),
    }


def claim_from_json(raw: object) -> Claim | None:
    if not isinstance(raw, dict):
        return None
    return Claim(
        status=raw["status"],
        expires_at=float(raw["expiresAt"]),
        version=raw["version"],
        done=tuple(raw.get("done") or ()),
    )


class CloudantClaimStore:
    def __init__(self, docs: Docs):
        self.docs = docs

    def create(self, key: str, claim: Claim) -> bool:
        if self.docs.create(key, {"claim": claim_to_json(claim)}):
            return True

        def add_if_unclaimed(doc):
            if doc is None or doc.get("claim") is not None:
                return None
            doc["claim"] = claim_to_json(claim)
            return doc

        # 409: normally a live claim (the duplicate); checked with one conditional write
        # only when the stored document has no claim at all.
        return self.docs.update(key, add_if_unclaimed)

    def get(self, key: str) -> Claim | None:
        doc = self.docs.get(key)
        return claim_from_json(doc.get("claim")) if doc else None

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        def swap(doc):
            current = claim_from_json(doc.get("claim")) if doc else None
            if current is None or current.version != expected_version:
                return None
            if current.status == COMPLETED and claim.status == IN_PROGRESS:
                # Only an expired completion is ever taken over: it was forgotten (past the
                # dedup window, as if the sweeper had removed it already), so the same id
                # is a new event and its processed outbox entry must not count as queued.
                box = doc.get("outbox")
                if isinstance(box, dict) and box.get("state") == DONE:
                    del doc["outbox"]
            doc["claim"] = claim_to_json(claim)
            return doc

        return self.docs.update(key, swap)

    def delete(self, key: str, expected_version: str) -> bool:
        def remove(doc):
            current = claim_from_json(doc.get("claim")) if doc else None
            if current is None or current.version != expected_version:
                return None
            if doc.get("outbox"):
                del doc["claim"]
                return doc
            return DELETE

        return self.docs.update(key, remove)
