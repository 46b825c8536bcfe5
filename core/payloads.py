"""Typed payloads of DT's 19 documented event types: `Event.data` for known types.

Field names are DT's camelCase in snake_case; `_build` maps them back and turns anything
missing or of the wrong shape into None (or an empty list/dict), never an exception:
an exception would mean a non-2xx answer and 12 hours of retries for a storable event.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from .times import parse_timestamp


def _optional_time(value: object) -> Optional[datetime]:
    try:
        return parse_timestamp(value)[0]
    except ValueError:
        return None


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


