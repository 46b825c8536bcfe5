"""Core's `ClaimStore` and `DeviceStateStore` on Firestore (native mode).

The SDK is imported inside the methods (it is already loaded by the time they run: the
client was built first), so importing this module stays cheap on a cold start.

Claims: one document per key in `DT_DEDUP_COLLECTION`. `create()` is Firestore's own
create-if-absent (AlreadyExists = someone holds the key); replace/delete compare the stored
`version` and write with an update-time precondition (`compare_and_write`). The claim's exact expiry is kept as a float
(`expiresAtSeconds`, compared in code); `expiresAt` is a timestamp for the collection's TTL
policy, which deletes lazily (up to ~24 h late) and only garbage-collects.

State: one document per (device, event type) in `DT_STATE_COLLECTION`, written (with the
same precondition) only when absent or older. Versions are integer nanoseconds, stored as int64
(exact; no float comparison anywhere). `data` and `labels` are stored as JSON text so any
payload DT sends fits (Firestore refuses nested arrays and some map keys).
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import time

from core.keys import store_key
from core.ports import Claim, DeviceState, StoreError
from core.retention import Retention

#: Per-call budget (seconds) incl. the SDK's own retries. Ingest makes 2-4 calls and must
#: answer DT within 10 s.
CALL_DEADLINE_S = 3.0
#: Rounds of read-compare-write before giving up under heavy contention on one document.
MAX_CAS_ROUNDS = 50


def _retry(read: bool):
    from google.api_core import exceptions as e
    from google.api_core.retry import Retry, if_exception_type

    # Writes are not retried on DeadlineExceeded: it may have been applied already.
    kinds = (e.ServiceUnavailable, e.ResourceExhausted) + ((e.DeadlineExceeded, e.InternalServerError) if read else ())
    return Retry(predicate=if_exception_type(*kinds), initial=0.05, maximum=1.0, multiplier=2.0, timeout=CALL_DEADLINE_S)


def _failed(what: str, exc: BaseException) -> StoreError:
    # The class name only: SDK messages can carry endpoints; never secrets, but keep it short.
    return StoreError(f"Firestore {what} failed ({type(exc).__name__})")


def _sdk_errors() -> tuple[type[BaseException], ...]:
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (GoogleAPIError, GoogleAuthError)


def compare_and_write(client, ref, decide, what: str) -> bool:
    """Atomic read-compare-write on one document, optimistically.

    `decide(snapshot)` returns None (do not write: answer False) or a write: ("create",
    doc), ("update", doc) or ("delete", None). Update and delete carry the precondition
    "the document's update time is still the one we read", create carries "absent", so a
    concurrent writer makes ours fail (FailedPrecondition / AlreadyExists / NotFound) and
    we read again. This is Firestore's own optimistic concurrency; unlike a server-SDK
    transaction it takes no lock (contending writers are not serialised behind lock
    timeouts) and every call honours our deadline.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound

    for round_ in range(MAX_CAS_ROUNDS):
        try:
            snap = ref.get(retry=_retry(read=True), timeout=CALL_DEADLINE_S)
            action = decide(snap)
            if action is None:
                return False
            kind, doc = action
            if kind == "create":
                ref.create(doc, retry=_retry(read=False), timeout=CALL_DEADLINE_S)
            else:
                option = client.write_option(last_update_time=snap.update_time)
                if kind == "update":  # every field is rewritten, so this replaces the record
                    ref.update(doc, option=option, retry=_retry(read=False), timeout=CALL_DEADLINE_S)
                else:
                    ref.delete(option=option, retry=_retry(read=False), timeout=CALL_DEADLINE_S)
            return True
        except (AlreadyExists, FailedPrecondition, NotFound):
            # Someone wrote in between: back off a little and compare again.
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2**round_)))
        except _sdk_errors() as exc:
            raise _failed(what, exc) from exc
    raise StoreError(f"Firestore {what} failed (too much contention on one document)")


class FirestoreClaimStore:
    def __init__(self, client, collection: str, retention: Retention | None = None):
        self._client = client  # google.cloud.firestore.Client; swapped by tests' broken()
        self._collection = collection
        # `expiresAt`, the TTL policy's field, is core.retention's rule, shared by every platform.
        self._retention = Retention.from_env() if retention is None else retention

    def _ref(self, key: str):
        return self._client.collection(self._collection).document(key)

    def _doc(self, claim: Claim) -> dict:
        gc_at = self._retention.removable_at(claim)
        return {
            "status": claim.status,
            "version": claim.version,
            "done": list(claim.done),
            "expiresAtSeconds": float(claim.expires_at),
            "expiresAt": _dt.datetime.fromtimestamp(max(gc_at, 0.0), _dt.timezone.utc),
        }

    @staticmethod
    def _claim(d: dict) -> Claim:
        return Claim(d["status"], float(d["expiresAtSeconds"]), d["version"], tuple(d.get("done") or ()))

    def create(self, key: str, claim: Claim) -> bool:
        from google.api_core.exceptions import AlreadyExists

        try:
            self._ref(key).create(self._doc(claim), retry=_retry(read=False), timeout=CALL_DEADLINE_S)
        except AlreadyExists:
            return False
        except _sdk_errors() as exc:
            raise _failed("create", exc) from exc
        return True

    def get(self, key: str) -> Claim | None:
        try:
            snap = self._ref(key).get(retry=_retry(read=True), timeout=CALL_DEADLINE_S)
        except _sdk_errors() as exc:
            raise _failed("get", exc) from exc
        return self._claim(snap.to_dict()) if snap.exists else None

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        doc = self._doc(claim)
        return self._if_version(key, expected_version, ("update", doc), "replace")

    def delete(self, key: str, expected_version: str) -> bool:
        return self._if_version(key, expected_version, ("delete", None), "delete")

    def _if_version(self, key: str, expected_version: str, action, what: str) -> bool:
        def decide(snap):
            if not snap.exists or snap.get("version") != expected_version:
                return None
            return action

        return compare_and_write(self._client, self._ref(key), decide, what)


class FirestoreStateStore:
    def __init__(self, client, collection: str):
        self._client = client
        self._collection = collection

    def _col(self):
        return self._client.collection(self._collection)

    @staticmethod
    def doc_id(device_id: str, event_type: str) -> str:
        # Each part is [A-Za-z0-9_-] (store_key), so "." separates them unambiguously.
        return f"{store_key(device_id)}.{store_key(event_type)}"

    def put_if_newer(self, state: DeviceState) -> bool:
        ref = self._col().document(self.doc_id(state.device_id, state.event_type))
        doc = {
            "deviceId": state.device_id,
            "eventType": state.event_type,
            "version": int(state.version),
            "eventId": state.event_id,
            "timestamp": state.timestamp,
            "dataJson": json.dumps(state.data, separators=(",", ":"), ensure_ascii=False),
            "labelsJson": json.dumps(state.labels, separators=(",", ":"), ensure_ascii=False),
        }

        def decide(snap):
            if not snap.exists:
                return "create", doc
            if int(snap.get("version")) >= state.version:
                return None
            return "update", doc

        return compare_and_write(self._client, ref, decide, "state write")

    def get_device(self, device_id: str) -> list[DeviceState]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._col().where(filter=FieldFilter("deviceId", "==", device_id))
        try:
            snaps = list(query.stream(retry=_retry(read=True), timeout=CALL_DEADLINE_S))
        except _sdk_errors() as exc:
            raise _failed("state query", exc) from exc
        out = []
        for snap in snaps:
            d = snap.to_dict()
            out.append(
                DeviceState(
                    device_id=d["deviceId"],
                    event_type=d["eventType"],
                    version=int(d["version"]),
                    event_id=d["eventId"],
                    timestamp=d["timestamp"],
                    data=json.loads(d.get("dataJson") or "{}"),
                    labels=json.loads(d.get("labelsJson") or "{}"),
                )
            )
        return out
