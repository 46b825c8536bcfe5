"""Core's ClaimStore and DeviceStateStore on Azure Table Storage.

Create-if-absent is `create_entity` (409 `ResourceExistsError` when the row exists);
compare-and-set reads the row, checks core's `version` token, and writes with the row's
ETag and `MatchConditions.IfNotModified` (412 `ResourceModifiedError` if someone wrote in
between). Tables are created on first use if they do not exist yet.

Layout: a claim is PartitionKey = its store key (one row per partition, so writes spread
across partitions), RowKey = "claim". Table Storage has no TTL and no secondary index, so
each claim also gets an expiry-index row when it is created: PartitionKey = ``~x`` plus
the second at which the claim may first become removable (zero-padded), RowKey = the
claim's key. The sweeper (`azure_trigger.retention`) reads those partitions in key order
up to now, so it finds expired claims without scanning the table. Device state is PartitionKey = store_key(deviceId),
RowKey = store_key(eventType); `version` (ns since the epoch, ~1.8e18) is stored as a
zero-padded decimal string because Table Storage numbers are Int32/Int64/Double and the
SDK refuses to guess; it is compared as a Python int.
"""

from __future__ import annotations

import json
import random
import time
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from core.keys import store_key
from core.config import DEFAULT_DEDUP_TTL_S
from core.ports import COMPLETED, Claim, DeviceState, StoreError

from .clients import translated

CLAIM_ROW = "claim"
#: Expiry-index partitions: "~" sorts after every store key's characters, so the index
#: sits at the end of the table and never collides with a claim.
EXPIRY_PREFIX = "~x"


def expiry_partition(at: float) -> str:
    """The expiry-index partition of moment `at` (epoch seconds): one per second."""
    return f"{EXPIRY_PREFIX}{max(int(at), 0):012d}"
# Table Storage strings are UTF-16 and at most 64 KiB: longer JSON is stored as Edm.Binary.
_MAX_STRING_CHARS = 32_000
_STATE_ATTEMPTS = 25


class Table:
    """One table, created on demand the first time a write finds it missing. `client` is
    the SDK's TableClient, for what this class does not wrap (the sweeper's range query,
    batch deletes and scans: `azure_trigger.retention`)."""

    def __init__(self, client, what: str):
        self.client = client
        self._what = what

    def get(self, partition: str, row: str):
        try:
            with translated(f"{self._what} read"):
                return self.client.get_entity(partition, row)
        except StoreError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):  # no row, or no table yet
                return None
            raise

    def _write(self, what: str, write: Callable[[], object]) -> None:
        """Run `write`; when the table does not exist yet (the only 404 an insert gives:
        TableNotFound), create it and run `write` once more."""
        try:
            with translated(f"{self._what} {what}"):
                write()
            return
        except StoreError as exc:
            if not isinstance(exc.__cause__, ResourceNotFoundError):
                raise
        self._create_table()
        with translated(f"{self._what} {what}"):
            write()

    def create(self, entity: dict) -> bool:
        """Insert; False if the row exists."""
        try:
            self._write("create", lambda: self.client.create_entity(entity))
        except StoreError as exc:
            if isinstance(exc.__cause__, ResourceExistsError):
                return False
            raise
        return True

    def replace(self, entity: dict, etag: str) -> bool:
        """Overwrite only if the row still has `etag`. False if it changed or vanished."""
        try:
            with translated(f"{self._what} update"):
                self.client.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            return True
        except StoreError as exc:
            if isinstance(exc.__cause__, (ResourceModifiedError, ResourceNotFoundError)):
                return False
            raise

    def upsert(self, entity: dict) -> None:
        """Insert or overwrite, unconditionally (the expiry index: rewriting it is harmless)."""
        self._write("upsert", lambda: self.client.upsert_entity(entity, mode=UpdateMode.REPLACE))

    def delete_any(self, partition: str, row: str) -> None:
        """Delete unconditionally; a row already gone is fine."""
        try:
            with translated(f"{self._what} delete"):
                self.client.delete_entity(partition, row)
        except StoreError as exc:
            if not isinstance(exc.__cause__, ResourceNotFoundError):
                raise

    def delete(self, partition: str, row: str, etag: str) -> bool:
        """Delete only if the row still has `etag`. (The SDK reports a row deleted by someone
        else meanwhile as success: either way it is gone.)"""
        try:
            with translated(f"{self._what} delete"):
                self.client.delete_entity(partition, row, etag=etag, match_condition=MatchConditions.IfNotModified)
            return True
        except StoreError as exc:
            if isinstance(exc.__cause__, (ResourceModifiedError, ResourceNotFoundError)):
                return False
            raise

    def query_partition(self, partition: str) -> list:
        try:
            with translated(f"{self._what} query"):
                return list(self.client.query_entities("PartitionKey eq @pk", parameters={"pk": partition}))
        except StoreError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):  # table not created yet
                return []
            raise

    def _create_table(self) -> None:
        try:
            with translated(f"{self._what} table creation"):
                self.client.create_table()
        except StoreError as exc:
            if not isinstance(exc.__cause__, ResourceExistsError):  # created concurrently: fine
                raise


def _json_property(value) -> str | bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= _MAX_STRING_CHARS else text.encode("utf-8")


def _from_json_property(value) -> object:
    return json.loads(value if isinstance(value, str) else bytes(value).decode("utf-8"))


def claim_of(entity) -> Claim:
    """The claim a claim row holds (`TableClaimStore` writes it; the sweeper reads it too)."""
    return Claim(
        entity["status"], float(entity["expires_at"]), entity["version"], tuple(json.loads(entity.get("done") or "[]"))
    )


class TableClaimStore:
    def __init__(self, client, first_removable_after_s: float = DEFAULT_DEDUP_TTL_S, clock=time.time):
        """`first_removable_after_s`: the earliest a claim created now can be removable
        (the dedup window, ``DT_DEDUP_TTL_S``: a claim is completed for at least that
        long, and an unfinished one is kept longer still). The sweeper re-files a claim
        it finds not yet removable, so an early index entry only costs one look."""
        self.table = Table(client, "claim table")
        self._first_removable_after_s = first_removable_after_s
        self._clock = clock

    def index(self, key: str, at: float) -> None:
        """File `key` in the expiry index under moment `at`."""
        self.table.upsert({"PartitionKey": expiry_partition(at), "RowKey": key})

    @staticmethod
    def _entity(key: str, claim: Claim) -> dict:
        return {
            "PartitionKey": key,
            "RowKey": CLAIM_ROW,
            "status": claim.status,
            "expires_at": float(claim.expires_at),
            "version": claim.version,
            "done": json.dumps(list(claim.done)),
        }

    def create(self, key: str, claim: Claim) -> bool:
        # Indexed first: a crash between the two leaves an index entry the sweeper drops,
        # never a claim nothing would find. (A duplicate's entry is dropped the same way.)
        first_removable = claim.expires_at if claim.status == COMPLETED else self._clock() + self._first_removable_after_s
        self.index(key, min(first_removable, claim.expires_at + self._first_removable_after_s))
        return self.table.create(self._entity(key, claim))

    def get(self, key: str) -> Claim | None:
        entity = self.table.get(key, CLAIM_ROW)
        return None if entity is None else claim_of(entity)

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        entity = self.table.get(key, CLAIM_ROW)
        if entity is None or entity.get("version") != expected_version:
            return False
        return self.table.replace(self._entity(key, claim), entity.metadata["etag"])

    def delete(self, key: str, expected_version: str) -> bool:
        entity = self.table.get(key, CLAIM_ROW)
        if entity is None or entity.get("version") != expected_version:
            return False
        return self.table.delete(key, CLAIM_ROW, entity.metadata["etag"])


class TableDeviceStateStore:
    def __init__(self, client):
        self.table = Table(client, "device state table")

    @staticmethod
    def _entity(state: DeviceState) -> dict:
        return {
            "PartitionKey": store_key(state.device_id),
            "RowKey": store_key(state.event_type),
            "deviceId": state.device_id,
            "eventType": state.event_type,
            "version": f"{state.version:020d}",
            "eventId": state.event_id,
            "timestamp": state.timestamp,
            "data": _json_property(state.data),
            "labels": _json_property(state.labels),
        }

    @staticmethod
    def _state(entity) -> DeviceState:
        """Core's own record (`DeviceState.from_dict`), once its JSON properties are decoded."""
        return DeviceState.from_dict(
            {**entity, "data": _from_json_property(entity["data"]), "labels": _from_json_property(entity["labels"])}
        )

    def put_if_newer(self, state: DeviceState) -> bool:
        entity = self._entity(state)
        for attempt in range(_STATE_ATTEMPTS):
            current = self.table.get(entity["PartitionKey"], entity["RowKey"])
            if current is None:
                if self.table.create(entity):
                    return True
            elif int(current["version"]) >= state.version:
                return False
            elif self.table.replace(entity, current.metadata["etag"]):
                return True
            # Someone wrote in between: read again (their write may already be newer).
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise StoreError("device state update kept conflicting; giving up for now")

    def get_device(self, device_id: str) -> list[DeviceState]:
        return [self._state(e) for e in self.table.query_partition(store_key(device_id))]
