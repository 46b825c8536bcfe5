"""What a deployment keeps, and for how long: storage bounded by the dedup window.

Every backend removes old records by its own means: a native TTL (DynamoDB, Firestore,
Redis key expiry) where there is one, elsewhere an `ExpiredRecordSweeper` that runs by
itself (SQLite: the receiver's background thread; Table Storage: a timer trigger;
Cloudant: the worker job). All of them apply the one rule written here:

    Never remove a record that a live dedup decision or an unfinished event still needs.

- A COMPLETED claim (ingest's dedup record, the worker's ledger entry) is needed while
  it is live: until `expires_at`, the end of the dedup window. After that a DT retry of
  the same id is a new event anyway (see `core.claims`), so it may go.
- An IN_PROGRESS claim is needed past its lease: an abandoned worker lease carries the
  handlers already done, which a redelivery must skip. It is kept `UNFINISHED_GRACE_S`
  after its lease ends, by which time the queue has stopped redelivering.
- A queued (unprocessed) event is never removed by age; a dead letter is kept
  `DEAD_LETTER_RETENTION_S` (``DT_DEAD_LETTER_RETENTION_S``) so an operator can requeue it.
- Device state is one record per (device, event type) and is never removed.

Sweepers delete conditionally (the SQL ``WHERE``, the row's ETag, the document's `_rev`),
so a record rewritten after the sweeper read it (a takeover, a new claim) stays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, runtime_checkable

from .config import number_setting
from .ports import COMPLETED, Claim

#: How long an unfinished claim outlives its lease (the queue's redeliveries are over by
#: then: SQS, Pub/Sub and the local queue retry for minutes to hours, not a day).
UNFINISHED_GRACE_S = 24 * 3600.0
#: How long a dead letter is kept for an operator to inspect and requeue.
DEFAULT_DEAD_LETTER_RETENTION_S = 14 * 24 * 3600.0
#: Records one sweep batch removes at most: small, so a batch never holds a store long.
DEFAULT_SWEEP_BATCH = 200


def removable_at(claim: Claim, grace_s: float = UNFINISHED_GRACE_S) -> float:
    """The moment after which `claim` is needed by nobody (epoch seconds). Native TTLs are
    set to this; sweepers delete records whose moment has passed."""
    return claim.expires_at if claim.status == COMPLETED else claim.expires_at + grace_s


def is_removable(claim: Claim, now: float, grace_s: float = UNFINISHED_GRACE_S) -> bool:
    return removable_at(claim, grace_s) <= now


def dead_letter_retention_s(env: Mapping[str, str] | None = None) -> float:
    """``DT_DEAD_LETTER_RETENTION_S``, default 14 days (SQS's longest retention)."""
    return number_setting(os.environ if env is None else env, "DT_DEAD_LETTER_RETENTION_S", DEFAULT_DEAD_LETTER_RETENTION_S)


@dataclass
class SweepResult:
    """What one `sweep` removed, by record kind (e.g. ``claims``, ``dead_letters``)."""

    removed: dict[str, int] = field(default_factory=dict)
    #: True when a batch limit was reached: more removable records may remain.
    more: bool = False

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def add(self, kind: str, n: int) -> None:
        if n:
            self.removed[kind] = self.removed.get(kind, 0) + n


@dataclass
class StoreReport:
    """The size of a deployment's store, so an operator sees growth: record counts by
    kind, and per kind the time (epoch seconds) of its oldest record. For claims, which
    store no write time, that is the earliest `expires_at`: one well in the past means
    cleanup is falling behind."""

    counts: dict[str, int]
    oldest: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self, now: float) -> dict:
        return {
            "records": self.counts,
            "total": self.total,
            "oldest": {
                kind: {"at": at, "ageS": round(now - at, 3)} for kind, at in sorted(self.oldest.items())
            },
        }


@runtime_checkable
class ExpiredRecordSweeper(Protocol):
    """Removes records past their retention from one backend, by the rule above.

    `sweep` removes at most `limit` records per kind and returns; callers repeat it
    (paced) while `SweepResult.more`. It raises `core.ports.StoreError` when the store
    cannot be reached: the next run simply tries again.
    """

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult: ...


def sweep_until_done(
    sweeper: ExpiredRecordSweeper,
    now: float,
    *,
    limit: int = DEFAULT_SWEEP_BATCH,
    max_batches: int = 50,
    pause_s: float = 0.0,
    wait: Callable[[float], object] | None = None,
) -> SweepResult:
    """Run bounded batches until nothing removable is left or `max_batches` ran, pausing
    `pause_s` between batches (through `wait`, e.g. a stop event's `wait`, which returns
    True to stop early) so ingest gets the store in between."""
    total = SweepResult()
    for _ in range(max_batches):
        result = sweeper.sweep(now, limit)
        for kind, n in result.removed.items():
            total.add(kind, n)
        total.more = result.more
        if not result.more:
            break
        if pause_s and wait is not None and wait(pause_s):
            break
    return total
