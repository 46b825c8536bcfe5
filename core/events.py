"""The event model: DT's JSON body turned into typed, tolerant Python objects.

Two levels of strictness, on purpose. The four fields the pipeline depends on
(`eventId`, `eventType`, `targetName`, `timestamp`) are checked and a body without them
is refused with 400. Everything else is optional: a missing or oddly typed field becomes
`None`, never an exception, because an exception here would mean a non-2xx answer and 12
hours of retries for an event we could have stored. Unknown event types keep their raw
`data` dict, so new DT event types flow through untouched.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any, Optional


class InvalidEvent(ValueError):
    """The body is not a DT event we can process (answered 400). The message is safe to
    return to the caller: it names fields, never echoes their values."""


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))"
)


def parse_timestamp(value: object) -> tuple[datetime, int]:
    """An RFC 3339 timestamp as (aware UTC datetime, integer nanoseconds since the epoch).

    DT sends 6 or 9 fractional digits; `datetime` keeps only 6, so the nanosecond integer
    is the version used for "only overwrite with a strictly newer event".
    """
    if not isinstance(value, str):
        raise InvalidEvent("timestamp must be an RFC 3339 string")
    m = _RFC3339.fullmatch(value.strip())
    if not m:
        raise InvalidEvent("timestamp is not RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    nanos = int((m.group(7) or "").ljust(9, "0"))
    try:
        dt = datetime(year, month, day, hour, minute, second, nanos // 1000, tzinfo=timezone.utc)
    except ValueError:
        raise InvalidEvent("timestamp is not a valid date and time") from None
    if m.group(9):
        sign = 1 if m.group(9) == "+" else -1
        dt -= sign * timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
    whole_seconds = int(dt.replace(microsecond=0).timestamp())
    return dt, whole_seconds * 1_000_000_000 + nanos


def _optional_time(value: object) -> Optional[datetime]:
    try:
        return parse_timestamp(value)[0]
    except InvalidEvent:
        return None


# --- typed payloads -----------------------------------------------------------------
# Field names are DT's camelCase in snake_case; `_build` maps them back and drops
# anything of the wrong shape.


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _build(cls, raw: object):
    src = raw if isinstance(raw, dict) else {}
    values = {}
    for f in dataclasses.fields(cls):
        value = src.get(_camel(f.name))
        kind = f.metadata.get("kind")
        if kind == "time":
            value = _optional_time(value)
        elif kind == "list":
            item = f.metadata.get("item")
            items = value if isinstance(value, list) else []
            value = [_build(item, v) for v in items] if item else list(items)
        elif kind == "number":
            value = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        elif kind == "bool":
            value = value if isinstance(value, bool) else None
        elif kind == "str":
            value = value if isinstance(value, str) else None
        elif kind == "dict":
            value = value if isinstance(value, dict) else {}
        values[f.name] = value
    return cls(**values)


def _time():
    return field(default=None, metadata={"kind": "time"})


def _num():
    return field(default=None, metadata={"kind": "number"})


def _str():
    return field(default=None, metadata={"kind": "str"})


def _bool():
    return field(default=None, metadata={"kind": "bool"})


def _list(item=None):
    return field(default_factory=list, metadata={"kind": "list", "item": item})


def _dict():
    return field(default_factory=dict, metadata={"kind": "dict"})


@dataclass(frozen=True)
class TemperatureSample:
    value: Optional[float] = _num()
    sample_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class HumiditySample:
    temperature: Optional[float] = _num()
    relative_humidity: Optional[float] = _num()
    sample_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class CloudConnector:
    id: Optional[str] = _str()
    signal_strength: Optional[float] = _num()
    rssi: Optional[float] = _num()


@dataclass(frozen=True)
class Touch:
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class Temperature:
    value: Optional[float] = _num()
    update_time: Optional[datetime] = _time()
    samples: list = _list(TemperatureSample)
    is_backfilled: Optional[bool] = _bool()


@dataclass(frozen=True)
class ObjectPresent:
    state: Optional[str] = _str()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class Humidity:
    temperature: Optional[float] = _num()
    relative_humidity: Optional[float] = _num()
    update_time: Optional[datetime] = _time()
    samples: list = _list(HumiditySample)
    is_backfilled: Optional[bool] = _bool()


@dataclass(frozen=True)
class ObjectPresentCount:
    total: Optional[int] = _num()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class TouchCount:
    total: Optional[int] = _num()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class WaterPresent:
    state: Optional[str] = _str()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class NetworkStatus:
    signal_strength: Optional[float] = _num()
    rssi: Optional[float] = _num()
    update_time: Optional[datetime] = _time()
    cloud_connectors: list = _list(CloudConnector)
    transmission_mode: Optional[str] = _str()


@dataclass(frozen=True)
class BatteryStatus:
    percentage: Optional[float] = _num()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class LabelsChanged:
    added: dict = _dict()
    modified: dict = _dict()
    removed: list = _list()


@dataclass(frozen=True)
class ConnectionStatus:
    connection: Optional[str] = _str()
    available: list = _list()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class EthernetStatus:
    mac_address: Optional[str] = _str()
    ip_address: Optional[str] = _str()
    errors: list = _list()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class CellularStatus:
    signal_strength: Optional[float] = _num()
    errors: list = _list()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class Co2:
    ppm: Optional[float] = _num()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class Pressure:
    pascal: Optional[float] = _num()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class Motion:
    state: Optional[str] = _str()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class DeskOccupancy:
    state: Optional[str] = _str()
    remarks: list = _list()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class Contact:
    state: Optional[str] = _str()
    update_time: Optional[datetime] = _time()


@dataclass(frozen=True)
class ProbeWireStatus:
    state: Optional[str] = _str()
    update_time: Optional[datetime] = _time()


#: Every event type in DT's reference, mapped to its typed payload.
EVENT_TYPES: dict[str, type] = {
    "touch": Touch,
    "temperature": Temperature,
    "objectPresent": ObjectPresent,
    "humidity": Humidity,
    "objectPresentCount": ObjectPresentCount,
    "touchCount": TouchCount,
    "waterPresent": WaterPresent,
    "networkStatus": NetworkStatus,
    "batteryStatus": BatteryStatus,
    "labelsChanged": LabelsChanged,
    "connectionStatus": ConnectionStatus,
    "ethernetStatus": EthernetStatus,
    "cellularStatus": CellularStatus,
    "co2": Co2,
    "pressure": Pressure,
    "motion": Motion,
    "deskOccupancy": DeskOccupancy,
    "contact": Contact,
    "probeWireStatus": ProbeWireStatus,
}


def typed_data(event_type: str, data: object) -> Any:
    """The typed payload for a known type, else `data` unchanged.

    DT nests the payload under the type's name (``{"temperature": {...}}``), except for
    `labelsChanged`, whose fields sit directly under `data`.
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        return data
    src = data if isinstance(data, dict) else {}
    return _build(cls, src if event_type == "labelsChanged" else src.get(event_type))


# --- the envelope ------------------------------------------------------------------


@dataclass(frozen=True)
class Metadata:
    device_id: Optional[str] = _str()
    project_id: Optional[str] = _str()
    device_type: Optional[str] = _str()
    product_number: Optional[str] = _str()


_TARGET = re.compile(r"projects/([^/]+)/devices/([^/]+)")


@dataclass(frozen=True)
class Event:
    """One DT event as handlers see it. `data` is typed for the 19 known event types
    (e.g. `event.data.value` for temperature) and the raw dict for any other type;
    `raw` is the whole body as DT sent it."""

    event_id: str
    event_type: str
    target_name: str
    device_id: str
    project_id: str
    timestamp: datetime
    version: int
    labels: dict
    metadata: Optional[Metadata]
    raw: dict

    @cached_property
    def data(self) -> Any:
        """Built on first use: ingest only validates, the worker's handlers read `data`."""
        return typed_data(self.event_type, self.raw["event"].get("data"))

    @property
    def is_known_type(self) -> bool:
        return self.event_type in EVENT_TYPES


def _required_str(event: dict, name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"event.{name} is missing or not a non-empty string")
    return value


def body_text(body: bytes) -> str:
    """The body as text. DT sends UTF-8 JSON; anything else is refused rather than guessed."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("body is not UTF-8") from None


def parse_event(body: bytes | str | dict) -> Event:
    """Parse a DT request body (raw bytes, text, or an already decoded dict).

    Raises `InvalidEvent` (400) and nothing else.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body_text(bytes(body))
    if isinstance(body, dict):
        doc = body
    else:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidEvent("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidEvent("body is not a JSON object")
    event = doc.get("event")
    if not isinstance(event, dict):
        raise InvalidEvent("body has no 'event' object")
    event_id = _required_str(event, "eventId")
    event_type = _required_str(event, "eventType")
    target = _required_str(event, "targetName")
    timestamp, version = parse_timestamp(_required_str(event, "timestamp"))

    raw_meta = doc.get("metadata")
    metadata = _build(Metadata, raw_meta) if isinstance(raw_meta, dict) else None
    # targetName is authoritative; metadata (added in 2022) fills in for odd targets.
    m = _TARGET.fullmatch(target)
    device_id = m.group(2) if m else (metadata and metadata.device_id) or target
    project_id = m.group(1) if m else (metadata and metadata.project_id) or ""
    labels = doc.get("labels")
    labels = {str(k): v for k, v in labels.items()} if isinstance(labels, dict) else {}
    return Event(
        event_id=event_id,
        event_type=event_type,
        target_name=target,
        device_id=device_id,
        project_id=project_id,
        timestamp=timestamp,
        version=version,
        labels=labels,
        metadata=metadata,
        raw=doc,
    )
