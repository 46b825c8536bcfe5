"""What a deployment keeps, and for how long: storage bounded by the dedup window.

Every backend removes old records by its own means: a native TTL (DynamoDB, Firestore,
Redis key expiry) where there is one, elsewhere an `ExpiredRecordSweeper` that runs by
itself (SQLite: a thread of the local receiver's worker process; Table Storage: a timer
trigger; Cloudant: the worker job). All of them apply the one rule written here, `Retention`:

    Never remove a record that a live dedup decision, or anything that may still run
    the event again, needs: whatever may re-run an event (a redelivery, a queued
    message, a dead letter within its retention) keeps that event's ledger entry at
    least as long.

- A COMPLETED claim (ingest's dedup record, the worker's ledger entry) is needed while
  it is live: until `expires_at`, the end of the dedup window. After that a DT retry of
  the same id is a new event anyway (see `core.claims`), so it may go. A completion
  that came after a failed attempt is made live for `Retention.rerun_window_s` instead
  (`completed_ttl_s`): another copy of that event may be a dead letter, requeued days
  later, and must find it done.
- An IN_PROGRESS claim is needed past its lease: it carries the handlers already done,
  which a redelivery, or a dead letter requeued by an operator, must skip. It is kept
  `rerun_window_s` after its lease ends: the dead-letter retention plus a day for the
  queue's own redeliveries before it dead-lettered (SQS, Pub/Sub and the local queue
  retry for minutes to hours, not a day). Only events whose handlers failed or were cut
  off leave such records, so this does not make storage grow with the deployment's age.
- A queued (unprocessed) event is never removed by age; a dead letter is kept
  `dead_letter_s` (``DT_DEAD_LETTER_RETENTION_S``, default 14 days) so an operator can
  requeue it. Where the cloud keeps dead letters (an SQS dead-letter queue, 14 days; a
  Pub/Sub dead-letter subscription, 7; an Azure poison queue, 7) its retention must not
  exceed ``DT_DEAD_LETTER_RETENTION_S``, which every deploy here respects.
- Device state is one record per (device, event type) and is never removed.

Sweepers delete conditionally (the SQL ``WHERE``, the row's ETag, the document's `_rev`),
so a record rewritten after the sweeper read it (a takeover, a new claim) stays. They
size their work to what expired: `sweep_until_done` runs bounded batches, paced, for as
long as there is more, so cleanup keeps up with any sustained ingest rate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, runtime_checkable

from .config import number_setting
from .ports import COMPLETED, Claim

#: How long a queue may keep redelivering an unfinished event before it dead-letters it
#: (at most): the margin between an event's last attempt and its dead letter's birth.
REDELIVERY_WINDOW_S = 24 * 3600.0
#: How long a dead letter is kept for an operator to inspect and requeue.
DEFAULT_DEAD_LETTER_RETENTION_S = 14 * 24 * 3600.0
#: Records one sweep batch removes at most: small, so a batch never holds a store long.
DEFAULT_SWEEP_BATCH = 500


def dead_letter_retention_s(env: Mapping[str, str] | None = None) -> float:
    """``DT_DEAD_LETTER_RETENTION_S``, default 14 days (SQS's longest retention)."""
    return number_setting(os.environ if env is None else env, "DT_DEAD_LETTER_RETENTION_S", DEFAULT_DEAD_LETTER_RETENTION_S)


@dataclass(frozen=True)
class Retention:
    """The rule above for one deployment: when each record may go. Native TTLs are set
    to `removable_at`; sweepers delete what `is_removable`."""

    dead_letter_s: float = DEFAULT_DEAD_LETTER_RETENTION_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Retention":
        return cls(dead_letter_retention_s(env))

    @property
    def rerun_window_s(self) -> float:
        """How long after an event's last attempt something may still run it again: the
        queue's redeliveries, then its dead letter, requeued within its retention."""
        return REDELIVERY_WINDOW_S + self.dead_letter_s

    def removable_at(self, claim: Claim) -> float:
        """The moment after which `claim` is needed by nobody (epoch seconds)."""
        return claim.expires_at if claim.status == COMPLETED else claim.expires_at + self.rerun_window_s

    def is_removable(self, claim: Claim, now: float) -> bool:
        return self.removable_at(claim) <= now

    def completed_ttl_s(self, dedup_ttl_s: float, *, after_failure: bool) -> float:
        """How long a completed event stays live in the worker's ledger: the dedup window,
        or, when an earlier attempt failed (so a copy of it may be a dead letter), the
        rerun window."""
        return max(dedup_ttl_s, self.rerun_window_s) if after_failure else dedup_ttl_s


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
    (paced) while `SweepResult.more`, so `more` must only be set by a batch that made
    progress (removed, or moved out of its range, what it read). It raises
    `core.ports.StoreError` when the store cannot be reached: the next run simply tries
    again.
    """

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult: ...


def sweep_until_done(
    sweeper: ExpiredRecordSweeper,
    now: float,
    *,
    limit: int = DEFAULT_SWEEP_BATCH,
    max_batches: int | None = None,
    budget_s: float | None = None,
    pause_s: float = 0.0,
    wait: Callable[[float], object] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> SweepResult:
    """Run bounded batches for as long as more is removable, pausing `pause_s` between
    batches (through `wait`, e.g. a stop event's `wait`, which returns True to stop early)
    so ingest gets the store in between. No fixed cap on the work: a backlog of expired
    records is worked off in one run, however large. `budget_s` (a timer function's time
    limit) and `max_batches` stop it earlier, with `more` set for the next run."""
    total = SweepResult()
    started = monotonic()
    batches = 0
    while True:
        result = sweeper.sweep(now, limit)
        batches += 1
        for kind, n in result.removed.items():
            total.add(kind, n)
        total.more = result.more
        if not result.more:
            return total
        if max_batches is not None and batches >= max_batches:
            return total
        if budget_s is not None and monotonic() - started >= budget_s:
            return total
        if pause_s and wait is not None and wait(pause_s):
            return total
