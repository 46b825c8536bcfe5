"""The dedup state machine, written once over any `ClaimStore`.

A record is IN_PROGRESS while someone holds it and COMPLETED once done; either one whose
`expires_at` has passed counts as absent ("expired"), because stores delete lazily.
Ingest uses it to claim an `eventId` for the few seconds it takes to enqueue; the worker
uses it (in its own key namespace) to run each event's handlers once, recording which
handlers finished so a redelivery skips them.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, replace
from typing import Callable

from .keys import store_key
from .ports import COMPLETED, IN_PROGRESS, Claim, ClaimStore, StoreError


class Outcome(enum.Enum):
    CLAIMED = "claimed"  # we hold it now
    DUPLICATE = "duplicate"  # already completed and still remembered
    IN_FLIGHT = "in_flight"  # someone else holds a live claim


class LostClaim(StoreError):
    """Our claim expired and someone else took the record over while we worked."""


@dataclass(frozen=True)
class Held:
    """A claim we own: the key and the exact record we last wrote."""

    key: str
    claim: Claim
    queued: bool = False  # the claim was written together with the queued message
    #: A new record, not one taken over from an earlier attempt. An event completed on a
    #: later attempt may have a dead-lettered copy, so the worker remembers it longer
    #: (`core.retention.Retention.completed_ttl_s`).
    first: bool = True

    @property
    def done(self) -> tuple[str, ...]:
        return self.claim.done


def new_version() -> str:
    """A fresh record version. It only has to differ from every other version of the same
    record (compare-and-set needs no secrecy), so 64 random bits from `random`, which is
    reseeded in a forked child, instead of a system call to the OS's random source."""
    return f"{random.getrandbits(64):016x}"


class Claims:
    def __init__(self, store: ClaimStore, namespace: str = "", clock: Callable[[], float] = time.time):
        self._store = store
        self._namespace = namespace
        self._clock = clock

    def acquire(
        self,
        event_id: str,
        lease_s: float,
        create: Callable[[str, Claim], bool] | None = None,
        completed_ttl_s: float | None = None,
    ) -> tuple[Outcome, Held | None]:
        """Claim `event_id` for `lease_s` seconds, taking over an expired record.

        `create` replaces the store's create-if-absent (ingest passes an `AtomicOutbox`'s
        claim-and-enqueue); a claim made through it is `Held.queued`, and, given
        `completed_ttl_s`, is written COMPLETED at once: with the message stored in the same
        write there is no moment in which the event is claimed but not yet queued, so there
        is nothing for an IN_PROGRESS state to guard, and marking it completed would cost a
        second write. Loops only when the record changes under us (released, or taken over
        by another request between our read and our write), a bounded number of times.
        """
        key = store_key(event_id, self._namespace)
        for _ in range(4):
            now = self._clock()
            fresh = Claim(IN_PROGRESS, now + lease_s, new_version())
            if create is not None:
                first = fresh if completed_ttl_s is None else Claim(COMPLETED, now + completed_ttl_s, fresh.version)
                if create(key, first):
                    return Outcome.CLAIMED, Held(key, first, queued=True)
            elif self._store.create(key, fresh):
                return Outcome.CLAIMED, Held(key, fresh)
            existing = self._store.get(key)
            if existing is None:
                continue  # released between our create and get: try to create again
            if existing.is_live(now):
                outcome = Outcome.DUPLICATE if existing.status == COMPLETED else Outcome.IN_FLIGHT
                return outcome, None
            # Expired. An unfinished attempt keeps its progress; a forgotten completion
            # (older than the TTL, so past DT's retry window) starts afresh.
            progress = existing.done if existing.status == IN_PROGRESS else ()
            taken = replace(fresh, done=progress)
            if self._store.replace(key, existing.version, taken):
                return Outcome.CLAIMED, Held(key, taken, first=False)
        return Outcome.IN_FLIGHT, None

    def acquire_new(
        self,
        event_ids: list[str],
        lease_s: float,
        create_many: Callable[[list[tuple[str, Claim]]], list[bool]],
        completed_ttl_s: float | None = None,
    ) -> list[Held | None]:
        """`acquire` for many events at once, for the common case of ids never seen: each
        gets the record `acquire` would create first, all written by one `create_many`
        (a `core.ports.BatchOutbox`). None for an id that already has a record (or
        repeats an earlier one): `acquire` settles that one (duplicate, in flight, or
        taken over), the state machine being written once, there."""
        now = self._clock()
        status, expires_at = (IN_PROGRESS, now + lease_s) if completed_ttl_s is None else (COMPLETED, now + completed_ttl_s)
        namespace = self._namespace
        records = [(store_key(event_id, namespace), Claim(status, expires_at, new_version())) for event_id in event_ids]
        created = create_many(records)
        return [Held(key, claim) if made else None for (key, claim), made in zip(records, created)]

    def complete(self, held: Held, ttl_s: float, also_done: tuple[str, ...] = ()) -> bool:
        """Mark done and remember for `ttl_s`. False if our claim was taken over meanwhile.
        `also_done`: handlers that finished but were not recorded yet (the worker records
        the last one with the completion: one write instead of two)."""
        done = Claim(COMPLETED, self._clock() + ttl_s, new_version(), held.claim.done + also_done)
        return self._store.replace(held.key, held.claim.version, done)

    def complete_many(self, items: list[tuple[Held, float, tuple[str, ...]]],
                      replace_many: Callable[[list[tuple[str, str, Claim]]], list[bool]]) -> list[bool]:
        """`complete` for many ``(held, ttl_s, also_done)`` at once, written by one
        `replace_many` (the store's ``replace`` for each ``(key, expected_version, claim)``)."""
        now = self._clock()
        return replace_many([
            (held.key, held.claim.version, Claim(COMPLETED, now + ttl_s, new_version(), held.claim.done + also_done))
            for held, ttl_s, also_done in items
        ])

    def release(self, held: Held) -> bool:
        """Give the id back so DT's retry can claim it. Only deletes our own claim."""
        return self._store.delete(held.key, held.claim.version)

    def record_progress(self, held: Held, handler_name: str) -> Held:
        """Note that one handler finished. Raises `LostClaim` if we no longer own it."""
        old = held.claim  # built directly: `dataclasses.replace` costs twice as much, per handler run
        claim = Claim(old.status, old.expires_at, new_version(), old.done + (handler_name,))
        if not self._store.replace(held.key, old.version, claim):
            raise LostClaim("the event was taken over by another worker")
        return Held(held.key, claim, held.queued, held.first)  # still `first` or not: the completion's TTL depends on it

    def abandon(self, held: Held) -> bool:
        """Let the next delivery take over at once, keeping the handlers already done."""
        claim = replace(held.claim, version=new_version(), expires_at=self._clock())
        return self._store.replace(held.key, held.claim.version, claim)
