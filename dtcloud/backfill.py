"""Re-deliver what DT never delivered, from DT's event history (31 days).

Why this shape: after an outage longer than DT's 12 h retries, or while a connector was
disabled, events exist only in DT's history. Each one is rebuilt exactly as the connector
would have sent it (`bodies.connector_body`), signed like DT (`signing`), and POSTed through
one delivery engine for the whole run (`delivery.Engine`: one connection pool, concurrency,
rate), device by device, oldest first, so the receiver's own dedup absorbs what it already
has and its "latest state" ends with the newest event.

What stops the run, at once and with the reason: a 4xx (a wrong secret or URL is refused
again for every event), or an event still failing with 5xx, timeouts or connection errors
`max_age_s` after its first try (the receiver is down: waiting that long again for every
device would only multiply the wait). Both exit 1 with a summary by answer; the checkpoint
keeps what was delivered, so the same command resumes. An event DT returns malformed (no
id, a timestamp that is not RFC 3339) is named and skipped; the run goes on.

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

from core.times import parse_rfc3339, rfc3339

from .bodies import connector_body, malformed_reason
from .client import Client
from .delivery import HINTS, Engine, Policy, Tally
from .signing import sign
from .text import printable

CHUNK = 50  # events per checkpointed step
SHOWN_MALFORMED = 5  # malformed events named one by one; the rest are counted
BACKFILL_HINTS = {**HINTS, 401: "check the secret (DT_SIGNATURE_SECRET or --secret-file): it must be the "
                                "receiver's"}


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
    devices: int = 0  # devices to backfill
    devices_done: int = 0  # devices whose window was delivered completely
    fetched: int = 0
    skipped: int = 0  # already delivered by an earlier, interrupted run
    malformed: int = 0  # events DT returned that cannot be delivered (named on stderr, not sent)
    tally: Tally | None = None
    dry_run: bool = False
    resumed: bool = False

    @property
    def stopped(self) -> str:
        return self.tally.stopped if self.tally else ""

    @property
    def interrupted(self) -> bool:
        return bool(self.tally and self.tally.interrupted)

    @property
    def complete(self) -> bool:
        return self.devices_done == self.devices and not self.malformed and not self.stopped \
            and not self.interrupted

    def to_dict(self) -> dict:
        t = self.tally or Tally("")
        return {
            "devices": self.devices, "devices_done": self.devices_done, "fetched": self.fetched,
            "skipped": self.skipped, "malformed": self.malformed, "sent": t.requests, "accepted": t.accepted,
            "duplicates": t.duplicates, "refused": dict(sorted(t.refused.items())),
            "given_up": dict(sorted(t.given_up.items())), "unanswered": dict(sorted(t.unanswered.items())),
            "not_tried": t.not_tried, "not_acknowledged": t.unacknowledged, "answers": dict(sorted(t.statuses.items())),
            "stopped": self.stopped, "interrupted": self.interrupted, "dry_run": self.dry_run,
            "resumed": self.resumed,
        }

    def text(self) -> str:
        devices = f"{self.devices} devices" if self.devices_done == self.devices or self.dry_run \
            else f"{self.devices} devices ({self.devices_done} done, {self.devices - self.devices_done} not finished)"
        skipped = f" ({self.skipped} already sent by an interrupted run)" if self.skipped else ""
        malformed = f"; {self.malformed} malformed events from DT skipped (named above)" if self.malformed else ""
        if self.dry_run:
            return f"backfill (dry run): {self.fetched} events from {devices} would be sent{skipped}{malformed}"
        t = self.tally or Tally("")
        lines = [f"backfill: fetched {self.fetched} events from {devices}"
                 + (f", skipped {self.skipped} already sent (resumed)" if self.resumed else "")
                 + f"; sent {t.requests} requests; {t.outcome()}{malformed}"]
        if t.unacknowledged:
            lines.append(f"backfill: {t.unacknowledged} of {t.events} events handed to the receiver were not "
                         "acknowledged; run the same command again to resume")
        if self.stopped:
            lines.insert(0, f"backfill: stopped: {self.stopped}")
        elif self.interrupted:
            lines.insert(0, "backfill: interrupted")
        return "\n".join(lines)


class Checkpoint:
    def __init__(self, path: str, key: str, since: datetime, until: datetime):
        self.path = Path(path)
        self.data = {"key": key, "since": rfc3339(since), "until": rfc3339(until), "devices": {}}
        self.resumed = False
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
                parse_rfc3339(old["since"]), parse_rfc3339(old["until"])
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                old = {}
            if isinstance(old, dict) and old.get("key") == key and isinstance(old.get("devices"), dict):
                self.data = old
                self.resumed = True

    @property
    def window(self) -> tuple[datetime, datetime]:
        return parse_rfc3339(self.data["since"]), parse_rfc3339(self.data["until"])

    def done_through(self, device: str) -> tuple[datetime, str] | None:
        mark = self.data["devices"].get(device)
        try:
            return parse_rfc3339(mark[0]), str(mark[1])
        except (TypeError, ValueError, IndexError):
            return None

    def advance(self, device: str, mark: tuple[str, str]) -> None:
        self.data["devices"][device] = list(mark)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)  # atomic: a kill never leaves half a checkpoint

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _order_key(event: dict) -> tuple:
    return (parse_rfc3339(event["timestamp"]), event["eventId"])


def run(client: Client, plan: Plan, progress: TextIO | None = None) -> Summary:
    progress = progress or sys.stderr

    def say(text: str) -> None:
        print(f"backfill: {text}", file=progress, flush=True)

    checkpoint = Checkpoint(plan.checkpoint, plan.key(), plan.since, plan.until)
    since, until = checkpoint.window  # a resumed run keeps the first run's window
    summary = Summary(dry_run=plan.dry_run, resumed=checkpoint.resumed)
    if checkpoint.resumed:
        say(f"resuming from {checkpoint.path}")
    engine = Engine(plan.url, Policy(concurrency=plan.concurrency, timeout_s=plan.timeout_s, max_age_s=plan.max_age_s,
                                     rate=plan.rate, stop_on_give_up=True),
                    sign=(lambda body: {"X-Dt-Signature": sign(body, plan.secret)}) if plan.secret else None,
                    report=say, hints=BACKFILL_HINTS)
    summary.tally = engine.tally
    try:
        devices = client.devices(plan.project, plan.devices or None)
        if plan.devices:
            devices = [d for d in devices if d["name"].rsplit("/", 1)[-1] in set(plan.devices)]
        summary.devices = len(devices)
        for n, device in enumerate(devices, 1):
            device_id = device["name"].rsplit("/", 1)[-1]
            if not _backfill_device(client, plan, engine, checkpoint, summary, device, device_id,
                                    f"[{n}/{len(devices)}] {printable(device_id, 80)}", (since, until), say):
                break
    except KeyboardInterrupt:
        engine.tally.interrupted = True
    finally:
        engine.close()
    if not plan.dry_run and summary.complete:
        checkpoint.remove()
    return summary


def _backfill_device(client, plan, engine, checkpoint, summary, device, device_id, label, window, say) -> bool:
    """One device's window; False when the run must stop."""
    events = client.events(plan.project, device_id, rfc3339(window[0]), rfc3339(window[1]), plan.types)
    summary.fetched += len(events)
    good = []
    for e in events:
        reason = malformed_reason(e)
        if reason is None:
            good.append(e)
            continue
        summary.malformed += 1
        if summary.malformed <= SHOWN_MALFORMED:
            ident = printable(e.get("eventId"), 40) if isinstance(e, dict) else "?"
            say(f"{label}: skipping a malformed event from DT (eventId {ident}): {reason}")
    good.sort(key=_order_key)  # DT answers newest first; deliver oldest first
    mark = checkpoint.done_through(device_id)
    if mark:
        todo = [e for e in good if _order_key(e) > mark]
        summary.skipped += len(good) - len(todo)
        good = todo
    say(f"{label}: {len(good)} events to send")
    if plan.dry_run or not good:
        summary.devices_done += 1
        return True
    for start in range(0, len(good), CHUNK):
        chunk = good[start:start + CHUNK]
        bodies = [connector_body(e, device, plan.project, plan.label_keys) for e in chunk]
        batch = engine.run(bodies, labels=[e["eventId"] for e in chunk])
        if batch.complete:
            last = chunk[-1]
            checkpoint.advance(device_id, (last["timestamp"], last["eventId"]))
        if engine.stopped:
            rest = len(good) - start - len(chunk)  # never handed to the engine: not tried either
            engine.tally.events += rest
            engine.tally.not_tried += rest
            say(f"{label}: {len(good) - start - batch.acknowledged} events not delivered; "
                "this device resumes from here next run")
            return False
        say(f"  {label}: {min(start + CHUNK, len(good))}/{len(good)} delivered")
    summary.devices_done += 1
    return True
