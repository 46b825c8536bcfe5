"""Follow DT's event stream into the local receiver's own pipeline: development with no tunnel.

Why not DT's `Stream.event_stream`: it reconnects on its own and, as DT says, events
published during a reconnect are never delivered. We reconnect ourselves so we know when
it happened, and after every reconnect fetch the gap from the event history (since the last
event we saw) before going on. The receiver's dedup absorbs the overlap.

Each event is wrapped as the connector would (`bodies.connector_body`) and handed to the local
app's `Receiver.handle` (same validation, dedup, queue, worker, handlers, state, dead
letters). The stream is already authenticated (our token, TLS), so the body is signed with a
random per-process secret only to pass through the unchanged receiver.

A connection that is silent for twice the ping interval is treated as dead (read timeout).
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, TextIO

from core.config import Secret, Settings
from core.http import Headers, Request
from emulator.signing import sign

from .bodies import connector_body, device_id_of
from .client import Client, DTError
from .timeparse import parse_rfc3339, rfc3339

MAX_BACKOFF_S = 30.0
HISTORY_LAG_S = 12.0  # DT: events may take up to ~10 s to appear in the history
GAP_OVERLAP = timedelta(seconds=1)


@dataclass
class Stats:
    streamed: int = 0
    backfilled: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reconnects: int = 0


class Follower:
    def __init__(self, client: Client, project: str, deliver: Callable[[bytes], int], *,
                 types: list[str] | None = None, label_keys: list[str] | None = None,
                 ping_interval_s: float = 10.0, log: TextIO | None = None, history_lag_s: float = HISTORY_LAG_S):
        self.client = client
        self.project = project
        self.deliver = deliver
        self.types = list(types or [])
        self.label_keys = list(label_keys or [])
        self.ping_interval_s = ping_interval_s
        self.log = log
        self.history_lag_s = history_lag_s
        self._recheck: tuple[float, datetime] | None = None  # (monotonic due time, gap start)
        self.stats = Stats()
        self.devices: dict[str, dict] = {}
        self.last_seen: datetime | None = None
        self.connected = threading.Event()  # set while a stream is open (tests wait on it)

    def _say(self, text: str) -> None:
        print(f"stream: {text}", file=self.log or sys.stderr, flush=True)

    def _device(self, device_id: str) -> dict | None:
        if device_id not in self.devices:
            self._load_devices()
        return self.devices.get(device_id)

    def _load_devices(self) -> None:
        self.devices = {d["name"].rsplit("/", 1)[-1]: d for d in self.client.devices(self.project)}

    def _feed(self, event: dict, backfilled: bool = False) -> None:
        body = connector_body(event, self._device(device_id_of(event)), self.project, self.label_keys)
        status = self.deliver(body)
        if backfilled:
            self.stats.backfilled += 1
        else:
            self.stats.streamed += 1
        if status == 202:
            self.stats.accepted += 1
        elif 200 <= status < 300:
            self.stats.duplicates += 1
        else:
            self.stats.rejected += 1
            self._say(f"receiver answered {status} for event {event.get('eventId')}")
        ts = parse_rfc3339(event["timestamp"])
        if self.last_seen is None or ts > self.last_seen:
            self.last_seen = ts

    def backfill_gap(self, since: datetime) -> int:
        """Everything in history since `since`, oldest first, through the receiver."""
        self._load_devices()
        until = datetime.now(timezone.utc) + timedelta(seconds=1)
        events = []
        for device_id in self.devices:
            events += self.client.events(self.project, device_id, rfc3339(since - GAP_OVERLAP), rfc3339(until),
                                         self.types)
        events.sort(key=lambda e: parse_rfc3339(e["timestamp"]))
        for e in events:
            self._feed(e, backfilled=True)
        return len(events)

    def run(self, stop: threading.Event) -> None:
        """Follow until `stop` is set. Raises DTError for what retrying cannot fix."""
        params: dict = {"ping_interval": f"{self.ping_interval_s:g}s"}
        if self.types:
            params["event_types"] = self.types
        backoff = 0.5
        started = datetime.now(timezone.utc)
        first = True
        while not stop.is_set():
            gap_from = self.last_seen or started
            try:
                lines = self.client.stream_lines(self.project, params, read_timeout_s=2 * self.ping_interval_s)
                for raw in lines:
                    if not self.connected.is_set():
                        self.connected.set()
                        if first:
                            self._say(f"following project {self.project}")
                        else:
                            n = self.backfill_gap(gap_from)
                            self._say(f"reconnected; backfilled {n} events since {rfc3339(gap_from)}")
                            # what happened just before the reconnect may reach history later
                            self._recheck = (time.monotonic() + self.history_lag_s, gap_from)
                        first = False
                    if self._recheck and time.monotonic() >= self._recheck[0]:
                        _, since = self._recheck
                        self._recheck = None
                        n = self.backfill_gap(since)
                        self._say(f"history re-checked after {self.history_lag_s:g} s: {n} events in the gap")
                        backoff = 0.5
                    if stop.is_set():
                        break
                    if not raw:
                        continue
                    payload = json.loads(raw)
                    if "error" in payload:
                        raise DTError(f"DT ended the stream: {payload['error']}", retryable=True)
                    event = payload.get("result", {}).get("event", {})
                    if event.get("eventType") == "ping":
                        continue
                    self._feed(event)
                else:
                    if not stop.is_set():
                        raise DTError("the stream ended", retryable=True)
            except DTError as exc:
                if not exc.retryable:
                    raise
                if stop.is_set():
                    break
                self._say(f"{exc}; reconnecting in {backoff:g} s")
            except ValueError:
                self._say("a line that is not JSON; reconnecting")
            self.connected.clear()
            if stop.is_set():
                break
            self.stats.reconnects += 1
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def local_pipeline(db: str, env=None):
    """The local receiver, as `dtconnector serve` builds it, and a `deliver(body)` into it."""
    from local_receiver.app import LocalApp

    secret = secrets.token_urlsafe(32)
    settings = Settings.from_env(env, secrets=(Secret(secret),), signature_mode="secret")
    app = LocalApp(db, settings)
    app.take_ownership()
    app.start_worker()

    def deliver(body: bytes) -> int:
        request = Request("POST", body, Headers({"X-Dt-Signature": sign(body, secret),
                                                 "Content-Type": "application/json"}))
        return app.receiver.handle(request).status

    return app, deliver

