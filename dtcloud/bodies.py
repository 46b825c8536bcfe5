"""The request body a Data Connector sends for one event (DT's developer docs,
https://docs.developer.disruptive-technologies.com: "Receiving Events"; the labels as
"Configuring a Data Connector" describes them).

History and the stream return bare `event` objects; a receiver expects
`{"event": …, "labels": {…}, "metadata": {…}}` with only the connector's label keys. Backfill,
the stream and the stand-in all build bodies here, so they agree with each other.
"""

from __future__ import annotations

import json
from typing import Iterable

from core.times import parse_rfc3339


def device_id_of(event: dict) -> str:
    return str(event.get("targetName", "")).rsplit("/", 1)[-1]


def connector_body(event: dict, device: dict | None, project_id: str, label_keys: Iterable[str]) -> bytes:
    """`device` is DT's device resource (`name`, `type`, `productNumber`, `labels`) or None."""
    device = device or {}
    keys = set(label_keys)
    labels = {k: v for k, v in (device.get("labels") or {}).items() if k in keys}
    metadata = {
        "deviceId": device_id_of(event),
        "projectId": project_id,
        "deviceType": device.get("type", ""),
        "productNumber": device.get("productNumber", ""),
    }
    return json.dumps({"event": event, "labels": labels, "metadata": metadata}, separators=(",", ":")).encode()


def malformed_reason(event: object) -> str | None:
    """Why an item of DT's history or stream cannot be delivered as an event, or None if it
    can: backfill and the stream skip such an item, name it, and go on."""
    if not isinstance(event, dict):
        return "not a JSON object"
    for key in ("eventId", "eventType", "targetName", "timestamp"):
        if not isinstance(event.get(key), str) or not event[key]:
            return f"`{key}` is missing or not a string"
    try:
        parse_rfc3339(event["timestamp"])
    except ValueError:
        return "`timestamp` is not an RFC 3339 time"
    return None
