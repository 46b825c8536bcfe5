"""The small interfaces ("ports") through which core talks to storage and queues.

Each cloud folder implements these with its native services; `local_receiver` implements
them on SQLite. Core never imports a cloud SDK: it only sees these protocols and the two
exception types below, which adapters raise in place of their SDK's own errors.

The claim store is a *versioned* key-value store. Core writes a fresh random `version`
token on every write and every conditional operation names the version it expects, so
backends need only one kind of condition ("the stored version equals X"), which every
store here can express: DynamoDB condition expressions, Firestore transactions, Table
Storage ETags, Cloudant `_rev`, a Redis Lua script, a SQLite `WHERE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"


class StoreError(Exception):
    """Our own storage failed (unreachable, throttled, timed out).

    Ingest answers 503 so DT retries; the worker leaves the message for redelivery.
    Adapters raise this from their SDK's errors, chained with ``raise ... from exc``.
    The message must never contain a secret or a connection string.
    """


class QueueError(StoreError):
    """The queue did not durably accept a message."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One dedup record: who is handling an event id, and until when.

    `expires_at` (epoch seconds) is compared in code because every store here deletes
    expired items lazily, some time after they expire (see `core.retention`). `done` lists the user handlers that already completed
    (worker side), so a redelivery runs only the ones that did not.
    """

    status: str
    expires_at: float
    version: str
    done: tuple[str, ...] = field(default=())

    def is_live(self, now: float) -> bool:
        return self.expires_at > now


@runtime_checkable
class ClaimStore(Protocol):
    """Atomic create-if-absent plus compare-and-set on `Claim.version`.

    Keys are produced by `core.keys.store_key` and are safe for every backend
    (at most 200 ASCII characters of ``[A-Za-z0-9_-]``, never starting with ``_``).
    Every method raises `StoreError` when the store cannot be reached.
    """

    def create(self, key: str, claim: Claim) -> bool:
        """Store `claim` only if `key` is absent. True if stored, False if a record exists."""
        ...

    def get(self, key: str) -> Claim | None:
        """The stored record, or None."""
        ...

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        """Overwrite only if the stored record's version is `expected_version`."""
        ...

    def delete(self, key: str, expected_version: str) -> bool:
        """Delete only if the stored record's version is `expected_version`."""
        ...


@runtime_checkable
class EventQueue(Protocol):
    """A durable queue with redelivery. `enqueue` returns only once the message is stored."""

    def enqueue(self, message: str, *, event_id: str) -> None:
        """Store `message` (the verified raw body, as text). Raises `QueueError`."""
        ...


@runtime_checkable
class AtomicOutbox(Protocol):
    """Optional, for a queue that lives in the claim store's own database (an outbox read
    through a changes feed, as on Cloudant; the local receiver's SQLite file): claim and
    enqueue in one atomic write.

    When the queue has this method, ingest uses it for a new event instead of `create`,
    `enqueue`, then marking the claim completed: the claim it is handed is already
    COMPLETED, so no claim can exist without its message or the reverse, and a new event
    costs one write instead of three. Taking over an expired claim still uses `replace`
    then `enqueue`.
    """

    def claim_and_enqueue(self, key: str, claim: Claim, message: str, *, event_id: str) -> bool:
        """Like `ClaimStore.create`, also storing `message` for the worker in the same
        write. False if a record exists. Raises `QueueError`."""
        ...


@runtime_checkable
class BatchOutbox(Protocol):
    """Optional, for an `AtomicOutbox` that can store many new events in one write (the
    local receiver's group commit: `core.receiver.Receiver.accept_batch`)."""

    def claim_and_enqueue_many(self, items: list[tuple[str, Claim, str, str]]) -> list[bool]:
        """`claim_and_enqueue` for each ``(key, claim, message, event_id)``: whether each
        claim was created (False when a record exists, or an earlier item has the same
        key). All or nothing: raises `QueueError` having written none of them."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The latest event of one type for one device. `version` is the event timestamp in
    integer nanoseconds since the epoch, so stores compare numbers, never strings."""

    device_id: str
    event_type: str
    version: int
    event_id: str
    timestamp: str
    data: dict
    labels: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "deviceId": self.device_id,
            "eventType": self.event_type,
            "version": self.version,
            "eventId": self.event_id,
            "timestamp": self.timestamp,
            "data": self.data,
            "labels": self.labels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceState":
        return cls(
            device_id=d["deviceId"],
            event_type=d["eventType"],
            version=int(d["version"]),
            event_id=d["eventId"],
            timestamp=d["timestamp"],
            data=d.get("data") or {},
            labels=d.get("labels") or {},
        )


@runtime_checkable
class DeviceStateStore(Protocol):
    """Latest state per (device, event type), versioned by event timestamp."""

    def put_if_newer(self, state: DeviceState) -> bool:
        """Atomically store `state` only if no record exists for its (device, type) or the
        stored `version` is strictly lower. True if stored. Raises `StoreError`."""
        ...

    def get_device(self, device_id: str) -> list[DeviceState]:
        """Every stored event type of one device (order unspecified)."""
        ...
