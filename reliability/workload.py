"""DT-shaped workloads with a known correct end state.

A workload is a set of unique events (distinct ids, each (device, type) with strictly
increasing timestamps, so "the newest per device and type" is well defined), some of them
"poison" (a handler always fails on them), and a delivery list: every unique event once
plus a share of duplicates, shuffled, as DT's at-least-once delivery produces them.
`check` compares what a platform ended with against what the workload requires.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from core.times import rfc3339_ns

POISON_PREFIX = "poison-"
EVENT_TYPES = ("temperature", "touch", "co2", "humidity")
_BASE_NS = 1_795_341_600 * 1_000_000_000  # 2026-11-22T10:00:00Z


rfc3339 = rfc3339_ns  # nine fractional digits, as DT writes them


def body(event_id: str, device: str, event_type: str, ns: int, value: float = 0.0) -> bytes:
    ts = rfc3339(ns)
    inner = {"temperature": {"value": value, "updateTime": ts}} if event_type == "temperature" else {
        event_type: {"updateTime": ts, "value": value}
    }
    doc = {
        "event": {
            "eventId": event_id,
            "targetName": f"projects/proj1/devices/{device}",
            "eventType": event_type,
            "data": inner,
            "timestamp": ts,
        },
        "labels": {"name": device},
        "metadata": {"deviceId": device, "projectId": "proj1", "deviceType": event_type, "productNumber": ""},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Workload:
    unique: list[bytes]
    deliveries: list[bytes]
    poison_ids: set[str]
    #: (device, type) -> event id of the newest event
    newest: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [json.loads(b)["event"]["eventId"] for b in self.unique]

    @property
    def devices(self) -> set[str]:
        return {device for device, _ in self.newest}

    @property
    def healthy_ids(self) -> set[str]:
        return set(self.ids) - self.poison_ids


def make(
    unique: int,
    *,
    duplicates: float = 0.3,
    devices: int = 8,
    poison: int = 0,
    seed: int = 1,
    id_prefix: str = "",
) -> Workload:
    """`unique` events over `devices` devices (plus `poison` events on poison devices),
    delivered with `duplicates` * unique extra copies, all shuffled."""
    rng = random.Random(seed)
    bodies: list[bytes] = []
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    poison_ids: set[str] = set()
    total = unique + poison
    for i in range(total):
        is_poison = i >= unique
        device = f"{POISON_PREFIX}{i % 3}" if is_poison else f"dev-{rng.randrange(devices)}"
        event_type = rng.choice(EVENT_TYPES)
        ns = _BASE_NS + i * 1_000_003 + rng.randrange(1000)  # distinct per event, ns precision
        event_id = f"{id_prefix}e{seed:x}x{i:06d}{rng.getrandbits(40):010x}"
        bodies.append(body(event_id, device, event_type, ns, value=float(i)))
        if is_poison:
            poison_ids.add(event_id)
        key = (device, event_type)
        if key not in newest or newest[key][0] < ns:
            newest[key] = (ns, event_id)
    extra = [rng.choice(bodies) for _ in range(int(round(len(bodies) * duplicates)))]
    deliveries = bodies + extra
    rng.shuffle(deliveries)
    return Workload(bodies, deliveries, poison_ids, {k: v[1] for k, v in newest.items()})


def check(
    workload: Workload,
    completions: Mapping[str, int],
    state: Mapping[tuple[str, str], str],
    dead_letters: Iterable[str],
    *,
    may_repeat: Iterable[str] = (),
) -> list[str]:
    """Problems with an end state (empty = correct).

    `completions`: event id -> how many times the recording handler completed.
    `state`: (device, type) -> event id stored as the device's latest.
    `may_repeat`: ids allowed one extra completion (a worker crash between a handler's
    return and the ledger write, which the caller injected on purpose).
    """
    problems: list[str] = []
    repeat = set(may_repeat)
    for event_id in sorted(workload.healthy_ids):
        n = completions.get(event_id, 0)
        allowed = {1, 2} if event_id in repeat else {1}
        if n not in allowed:
            problems.append(f"{event_id}: handler completed {n} times (expected {sorted(allowed)})")
    for event_id in sorted(workload.poison_ids):
        if completions.get(event_id, 0):
            problems.append(f"{event_id}: poison event's handler completed")
    unknown = set(completions) - set(workload.ids)
    if unknown:
        problems.append(f"handlers ran for {len(unknown)} event ids never sent: {sorted(unknown)[:3]}")
    for key, event_id in sorted(workload.newest.items()):
        if state.get(key) != event_id:
            problems.append(f"state {key}: {state.get(key)!r}, expected the newest {event_id!r}")
    dead = list(dead_letters)
    if sorted(dead) != sorted(workload.poison_ids):
        extra = sorted(set(dead) - workload.poison_ids)[:5]
        missing = sorted(workload.poison_ids - set(dead))[:5]
        dupes = len(dead) - len(set(dead))
        problems.append(f"dead letters wrong: unexpected {extra}, missing {missing}, repeated {dupes}")
    return problems
