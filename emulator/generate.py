"""Realistic DT event bodies for N virtual devices.

The shapes follow DT's event reference and ``shared/samples/event-types.jsonl`` (one body
of each of the 19 types): ``event`` (``eventId``, ``targetName``, ``eventType``, ``data``,
``timestamp``), ``labels`` and ``metadata``. Each virtual device is one product kind
(a temperature sensor, a Cloud Connector, ...) and emits the event types that kind emits;
its timestamps strictly increase, so "the newest event per device and type" is
well defined however the bodies are later shuffled.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from core.times import rfc3339_ns

# deviceType (as in metadata) -> the event types that kind of device publishes.
DEVICE_KINDS: dict[str, tuple[str, ...]] = {
    "touch": ("touch", "networkStatus", "batteryStatus", "labelsChanged"),
    "temperature": ("temperature", "touch", "networkStatus", "batteryStatus", "probeWireStatus", "labelsChanged"),
    "proximity": ("objectPresent", "touch", "networkStatus", "batteryStatus", "labelsChanged"),
    "humidity": ("humidity", "touch", "networkStatus", "batteryStatus", "labelsChanged"),
    "proximityCounter": ("objectPresentCount", "touch", "networkStatus", "batteryStatus"),
    "touchCounter": ("touchCount", "touch", "networkStatus", "batteryStatus"),
    "waterDetector": ("waterPresent", "touch", "networkStatus", "batteryStatus"),
    "co2": ("co2", "pressure", "humidity", "touch", "networkStatus", "batteryStatus"),
    "motion": ("motion", "touch", "networkStatus", "batteryStatus"),
    "deskOccupancy": ("deskOccupancy", "touch", "networkStatus", "batteryStatus"),
    "contact": ("contact", "touch", "networkStatus", "batteryStatus"),
    "ccon": ("connectionStatus", "ethernetStatus", "cellularStatus", "labelsChanged"),
}

#: Every event type DT documents, in the reference's order.
EVENT_TYPES: tuple[str, ...] = (
    "touch", "temperature", "objectPresent", "humidity", "objectPresentCount", "touchCount",
    "waterPresent", "networkStatus", "batteryStatus", "labelsChanged", "connectionStatus",
    "ethernetStatus", "cellularStatus", "co2", "pressure", "motion", "deskOccupancy",
    "contact", "probeWireStatus",
)  # fmt: skip

_XID = "0123456789abcdefghijklmnopqrstuv"  # DT ids look like rs/xid: 20 base32hex chars


def dt_id(rng: random.Random, prefix: str = "") -> str:
    return prefix + "".join(rng.choice(_XID) for _ in range(20 - len(prefix)))


def rfc3339(ns: int) -> str:
    """``2024-05-29T10:34:03.970415Z`` (DT's 6 fractional digits) from epoch nanoseconds."""
    return rfc3339_ns(ns, 6)


def _data(event_type: str, ts: str, rng: random.Random, dev: "VirtualDevice") -> dict:
    r = rng
    if event_type == "touch":
        return {"touch": {"updateTime": ts}}
    if event_type == "temperature":
        value = round(r.gauss(21.0, 3.0), 2)
        return {"temperature": {"value": value, "isBackfilled": False,
                                "samples": [{"value": value, "sampleTime": ts}], "updateTime": ts}}
    if event_type == "objectPresent":
        return {"objectPresent": {"state": r.choice(("PRESENT", "NOT_PRESENT")), "updateTime": ts}}
    if event_type == "humidity":
        t, rh = round(r.gauss(22.0, 2.0), 2), r.randint(15, 80)
        return {"humidity": {"temperature": t, "relativeHumidity": rh,
                             "samples": [{"temperature": t, "relativeHumidity": rh, "sampleTime": ts}],
                             "isBackfilled": False, "updateTime": ts}}
    if event_type in ("objectPresentCount", "touchCount"):
        dev.counter += r.randint(1, 5)
        return {event_type: {"total": dev.counter, "updateTime": ts}}
    if event_type == "waterPresent":
        return {"waterPresent": {"state": r.choice(("PRESENT", "NOT_PRESENT")), "updateTime": ts}}
    if event_type == "networkStatus":
        strength, rssi = r.randint(0, 100), r.randint(-110, -50)
        return {"networkStatus": {"signalStrength": strength, "rssi": rssi, "updateTime": ts,
                                  "cloudConnectors": [{"id": dev.ccon_id, "signalStrength": strength, "rssi": rssi}],
                                  "transmissionMode": r.choice(("LOW_POWER_STANDARD_MODE", "HIGH_POWER_BOOST_MODE"))}}
    if event_type == "batteryStatus":
        return {"batteryStatus": {"percentage": r.randint(1, 100), "updateTime": ts}}
    if event_type == "labelsChanged":  # the one type whose fields sit directly under data
        return {"added": {"room": f"B{r.randint(1, 40)}"}, "modified": {"name": f"sensor {r.randint(1, 99)}"},
                "removed": r.choice(([], ["old-key"]))}
    if event_type == "connectionStatus":
        return {"connectionStatus": {"connection": r.choice(("ETHERNET", "CELLULAR", "OFFLINE")),
                                     "available": ["CELLULAR", "ETHERNET"], "updateTime": ts}}
    if event_type == "ethernetStatus":
        return {"ethernetStatus": {"macAddress": dev.mac, "ipAddress": f"10.0.{r.randint(0, 255)}.{r.randint(1, 254)}",
                                   "errors": [], "updateTime": ts}}
    if event_type == "cellularStatus":
        return {"cellularStatus": {"signalStrength": r.randint(0, 100), "errors": [], "updateTime": ts}}
    if event_type == "co2":
        return {"co2": {"ppm": r.randint(400, 2000), "updateTime": ts}}
    if event_type == "pressure":
        return {"pressure": {"pascal": r.randint(95000, 104000), "updateTime": ts}}
    if event_type == "motion":
        return {"motion": {"state": r.choice(("MOTION_DETECTED", "NO_MOTION_DETECTED")), "updateTime": ts}}
    if event_type == "deskOccupancy":
        return {"deskOccupancy": {"state": r.choice(("OCCUPIED", "NOT_OCCUPIED")),
                                  "remarks": r.choice(([], ["INCOMPLETE_DATA"])), "updateTime": ts}}
    if event_type == "contact":
        return {"contact": {"state": r.choice(("OPEN", "CLOSED")), "updateTime": ts}}
    if event_type == "probeWireStatus":
        return {"probeWireStatus": {"state": r.choice(("TWO_WIRE", "THREE_WIRE", "FOUR_WIRE")), "updateTime": ts}}
    return {event_type: {"updateTime": ts}}  # an unknown type: DT's usual nesting


@dataclass
class VirtualDevice:
    device_id: str
    project_id: str
    kind: str
    emits: tuple[str, ...]
    name: str
    ccon_id: str
    mac: str
    last_ns: int = 0
    counter: int = 0
    extra_labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedEvent:
    event_id: str
    device_id: str
    event_type: str
    timestamp: str
    body: bytes


class EventGenerator:
    """Builds bodies for `devices` virtual devices, restricted to `types` (default: all)."""

    def __init__(
        self,
        devices: int = 10,
        types: Sequence[str] | None = None,
        *,
        project_id: str | None = None,
        seed: int | None = None,
        clock=time.time_ns,
    ):
        if devices < 1:
            raise ValueError("devices must be at least 1")
        self.rng = random.Random(seed)
        self.clock = clock
        wanted = tuple(types) if types else EVENT_TYPES
        self.types = wanted
        project = project_id or dt_id(self.rng)
        # Kinds that add a not-yet-covered type come first, so even a few devices emit
        # every wanted type.
        kinds, covered = [], set()
        candidates = [k for k, emits in DEVICE_KINDS.items() if set(emits) & set(wanted)]
        while candidates:
            best = max(candidates, key=lambda k: len((set(DEVICE_KINDS[k]) & set(wanted)) - covered))
            candidates.remove(best)
            kinds.append(best)
            covered |= set(DEVICE_KINDS[best])
        unknown = [t for t in wanted if t not in EVENT_TYPES]  # new types: any device may send them
        if not kinds:
            kinds = ["temperature"]
        self.devices: list[VirtualDevice] = []
        for i in range(devices):
            kind = kinds[i % len(kinds)]
            emits = tuple(t for t in DEVICE_KINDS[kind] if t in wanted) + tuple(unknown)
            if not emits:
                emits = tuple(wanted)
            self.devices.append(
                VirtualDevice(
                    device_id=dt_id(self.rng, "emu"), project_id=project, kind=kind, emits=emits,
                    name=f"{kind} {i + 1}", ccon_id=dt_id(self.rng),
                    mac=":".join(f"{self.rng.randint(0, 255):02x}" for _ in range(6)),
                )
            )
        # The first events cover every wanted type once (so a short run shows all 19).
        seen: set[str] = set()
        self._cover: list[tuple[VirtualDevice, str]] = []
        for d, t in ((d, t) for d in self.devices for t in d.emits):
            if t not in seen:
                seen.add(t)
                self._cover.append((d, t))

    def _next_ns(self, dev: VirtualDevice) -> int:
        # Strictly increasing per device, in whole microseconds (DT's 6 digits).
        now = self.clock() // 1000 * 1000
        dev.last_ns = max(now, dev.last_ns + 1000)
        return dev.last_ns

    def event(self, dev: VirtualDevice, event_type: str) -> GeneratedEvent:
        ns = self._next_ns(dev)
        ts = rfc3339(ns)
        event_id = dt_id(self.rng)
        doc = {
            "event": {
                "eventId": event_id,
                "targetName": f"projects/{dev.project_id}/devices/{dev.device_id}",
                "eventType": event_type,
                "data": _data(event_type, ts, self.rng, dev),
                "timestamp": ts,
            },
            "labels": {"name": dev.name, **dev.extra_labels},
            "metadata": {
                "deviceId": dev.device_id,
                "projectId": dev.project_id,
                "deviceType": dev.kind,
                "productNumber": "",
            },
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        return GeneratedEvent(event_id, dev.device_id, event_type, ts, body)

    def events(self, count: int) -> Iterator[GeneratedEvent]:
        """`count` events: first one of each wanted type, then random devices and types."""
        for i in range(count):
            if i < len(self._cover):
                dev, event_type = self._cover[i]
            else:
                dev = self.rng.choice(self.devices)
                event_type = self.rng.choice(dev.emits)
            yield self.event(dev, event_type)


def generate(count: int, devices: int = 10, types: Sequence[str] | None = None, seed: int | None = None) -> list[GeneratedEvent]:
    return list(EventGenerator(devices, types, seed=seed).events(count))


def read_jsonl(path: str) -> list[bytes]:
    """Bodies from a JSONL file, one per non-empty line, sent byte for byte as written."""
    with open(path, "rb") as f:
        return [line.rstrip(b"\r\n") for line in f if line.strip()]
