"""core's `DeviceStateStore` on Cloudant (database `DT_CLOUDANT_STATE_DB`).

One document per (device, event type), `_id` = ``<device key>:<type key>`` (both from
`core.keys.store_key`), so one device's documents are a contiguous `_all_docs` range.

`version` (nanoseconds, ~1.8e18) is stored as a 20-digit zero-padded decimal string:
Cloudant's query engine and PouchDB read JSON numbers as doubles, which cannot hold it
exactly. For the same reason `data` and `labels` are also kept as JSON text in `exact`,
which is what is read back (the native copies are for people and queries; DT's values
are small, but a handler's or a future event type's large integers must survive).
The comparison happens here, on Python ints, and the write is conditional on
the `_rev` that was compared: a 409 means another writer got in first, so read again.
"""

from __future__ import annotations

import json

from core.keys import store_key
from core.ports import DeviceState

from .cloudant import Docs


def _doc_id(device_id: str, event_type: str) -> str:
    return f"{store_key(device_id)}:{store_key(event_type)}"


def _version_text(version: int) -> str:
    return f"{version:020d}"


def _to_state(doc: dict) -> DeviceState:
    fields = {**doc, "version": int(doc["version"])}
    if isinstance(doc.get("exact"), str):  # the lossless copy, when present
        fields.update(json.loads(doc["exact"]))
    return DeviceState.from_dict(fields)


class CloudantStateStore:
    def __init__(self, docs: Docs):
        self.docs = docs

    def put_if_newer(self, state: DeviceState) -> bool:
        def newer(doc):
            if doc is not None and int(doc.get("version", "0")) >= state.version:
                return None
            fields = state.to_dict()
            fields["version"] = _version_text(state.version)
            fields["exact"] = json.dumps({"data": state.data, "labels": state.labels}, separators=(",", ":"))
            return {**(doc or {}), **fields}

        return self.docs.update(_doc_id(state.device_id, state.event_type), newer)

    def get_device(self, device_id: str) -> list[DeviceState]:
        prefix = store_key(device_id) + ":"
        docs = self.docs.key_range(prefix, prefix + "\ufff0")
        return [_to_state(d) for d in docs if "deviceId" in d]
