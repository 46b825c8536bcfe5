"""Re-deliver what DT never delivered, from DT's event history (31 days).

Why this shape: after an outage longer than DT's 12 h retries, or while a connector was
disabled, events exist only in DT's history. Each one is rebuilt exactly as the connector
would have sent it (`bodies.connector_body`), signed like DT, and POSTed through the same
delivery engine as `dtconnector send` (`emulator.sender`: concurrency, retries with backoff,
rate limit, 10 s deadline), device by device, oldest first, so the receiver's own dedup
absorbs what it already has and its "latest state" ends with the newest event.

Resumable: after each chunk a device's progress (the last delivered (timestamp, eventId))
goes to a checkpoint file; an interrupted run with the same parameters continues from there.
A complete run removes its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from emulator.sender import SendConfig, Sender

from .bodies import connector_body
from .client import Client
from .timeparse import parse_rfc3339, rfc3339

CHUNK = 50  # events per checkpointed step


@dataclass
class Plan:
    project: str
    since: datetime
    until: datetime
    url: str
    secret: str | None
    devices: list[str] = field(default_factory=list)  # [] = every device
    types: list[str] = field(default_factory=list)  # [] = every type
    label_keys: list[str] = field(default_factory=list)
    checkpoint: str = ""
    dry_run: bool = False
    concurrency: int = 8
    rate: float | None = None
    timeout_s: float = 10.0
    max_age_s: float = 600.0
    window_text: str = ""  # --since/--until as typed ("3d"): the same command line resumes

    def key(self) -> str:
        """What makes two runs the same run (so a checkpoint may be resumed)."""
        parts = [self.project, self.window_text or rfc3339(self.since), self.url, ",".join(sorted(self.devices)),
                 ",".join(sorted(self.types)), ",".join(sorted(self.label_keys))]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class Summary:
    devices: int = 0
    fetched: int = 0
    skipped: int = 0  # already delivered by an earlier, interrupted run
    accepted: int = 0  # 202: new to the receiver
    duplicates: int = 0  # 200: the receiver had it already
    failed: int = 0  # given up after retries
    dry_run: bool = False
    resumed: bool = False

    def text(self) -> str:
        if self.dry_run:
            return (f"backfill (dry run): {self.fetched} events from {self.devices} devices would be sent"
                    + (f" ({self.skipped} already sent by an interrupted run)" if self.skipped else ""))
        return (f"backfill: fetched {self.fetched} events from {self.devices} devices"
                + (f", skipped {self.skipped} already sent (resumed)" if self.resumed else "")
                + f"; accepted {self.accepted}, duplicates {self.duplicates}, failed {self.failed}")


class Checkpoint:
    def __init__(self, path: str, key: str, since: datetime, until: datetime):
        self.path = Path(path)
        self.data = {"key": key, "since": rfc3339(since), "until": rfc3339(until), "devices": {}}
        self.resumed = False
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("key") == key:
                self.data = old
                self.resumed = True

    @property
    def window(self) -> tuple[datetime, datetime]:
        return parse_rfc3339(self.data["since"]), parse_rfc3339(self.data["until"])

    def done_through(self, device: str) -> tuple[str, str] | None:
        mark = self.data["devices"].get(device)
        return tuple(mark) if mark else None

    def advance(self, device: str, mark: tuple[str, str]) -> None:
        self.data["devices"][device] = list(mark)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)  # atomic: a kill never leaves half a checkpoint

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _order_key(event: dict) -> tuple:
    return (parse_rfc3339(event["timestamp"]), event.get("eventId", ""))


def run(client: Client, plan: Plan, progress: TextIO | None = None) -> Summary:
    progress = progress or sys.stderr
    checkpoint = Checkpoint(plan.checkpoint, plan.key(), plan.since, plan.until)
    since, until = checkpoint.window  # a resumed run keeps the first run's window
    summary = Summary(dry_run=plan.dry_run, resumed=checkpoint.resumed)
    if checkpoint.resumed:
        print(f"backfill: resuming from {checkpoint.path}", file=progress)
    devices = client.devices(plan.project, plan.devices or None)
    if plan.devices:
        devices = [d for d in devices if d["name"].rsplit("/", 1)[-1] in set(plan.devices)]
    summary.devices = len(devices)
    for n, device in enumerate(devices, 1):
        device_id = device["name"].rsplit("/", 1)[-1]
        events = client.events(plan.project, device_id, rfc3339(since), rfc3339(until), plan.types)
        events.sort(key=_order_key)  # DT answers newest first; deliver oldest first
        summary.fetched += len(events)
        mark = checkpoint.done_through(device_id)
        if mark:
            through = (parse_rfc3339(mark[0]), mark[1])
            todo = [e for e in events if _order_key(e) > through]
            summary.skipped += len(events) - len(todo)
            events = todo
        print(f"backfill: [{n}/{len(devices)}] {device_id}: {len(events)} events to send", file=progress, flush=True)
        if plan.dry_run or not events:
            continue
        for start in range(0, len(events), CHUNK):
            chunk = events[start:start + CHUNK]
            bodies = [connector_body(e, device, plan.project, plan.label_keys) for e in chunk]
            result = _send(plan, bodies)
            summary.accepted += result.statuses.get("202", 0)
            summary.duplicates += sum(v for k, v in result.statuses.items() if k.isdigit() and int(k) // 100 == 2
                                      and k != "202")
            summary.failed += result.given_up
            if result.given_up or result.interrupted:
                print(f"backfill: {device_id}: {result.given_up} events not acknowledged; "
                      "this device resumes from here next run", file=progress, flush=True)
                if result.interrupted:
                    raise KeyboardInterrupt
                break
            last = chunk[-1]
            checkpoint.advance(device_id, (last["timestamp"], last.get("eventId", "")))
            print(f"backfill:   {device_id}: {min(start + CHUNK, len(events))}/{len(events)} delivered",
                  file=progress, flush=True)
    if not plan.dry_run and summary.failed == 0:
        checkpoint.remove()
    return summary


def _send(plan: Plan, bodies: list[bytes]):
    config = SendConfig(url=plan.url, secret=plan.secret, concurrency=plan.concurrency, timeout_s=plan.timeout_s,
                        max_age_s=plan.max_age_s, rate=plan.rate, progress=None)
    return Sender(config).run(bodies)

