"""Follow DT's event stream into the local receiver's own pipeline: development with no tunnel.

Why not DT's own stream client: it reconnects on its own and, as DT says, events published
during a reconnect are never delivered. We reconnect ourselves so we know when it happened,
and after every reconnect fetch the gap from the event history (from the earliest start not
yet fetched: gaps accumulate until a fetch succeeds) before going on, and again
`history_lag_s` later (DT: events take up to ~10 s to reach the history). The receiver's
dedup absorbs the overlap.

Each event is wrapped as the connector would (`bodies.connector_body`) and handed to the
receiver's claim + enqueue step, `Receiver.accept_verified`: the stream is already
authenticated (our token, TLS), so nothing is signed or verified. Its answers: 202 new,
200 duplicate, 400 refused for good (named, skipped), 503 the store failed for now: the same
event is retried with backoff until it is stored or the stream is stopped, never dropped.

A connection that is silent for twice the ping interval is treated as dead (read timeout).
A line that is not one of DT's stream messages stops the command (exit 2); an event with a
malformed field is named and skipped.
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
from core.http import Response
from core.receiver import reason_of
from core.times import parse_rfc3339, rfc3339

from .bodies import connector_body, device_id_of, malformed_reason
from .client import Client, DTError
from .text import printable

MAX_BACKOFF_S = 30.0  # between reconnects
STORE_RETRY_MAX_S = 5.0  # between tries of an event the store could not take
HISTORY_LAG_S = 12.0  # DT: events may take up to ~10 s to appear in the history
GAP_OVERLAP = timedelta(seconds=1)
DEVICE_RELOAD_MIN_S = 30.0  # the device list is reloaded at most this often
UNKNOWN_DEVICE_TTL_S = 300.0  # a device not in the list is not looked up again for this long
MAX_UNKNOWN_DEVICES = 10_000


@dataclass
class Stats:
    streamed: int = 0
    backfilled: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0  # refused for good by the receiver (400): never stored
    malformed: int = 0  # items from DT that are not events we can deliver
    store_retries: int = 0  # tries repeated because the store answered 503
    unstored: int = 0  # events still not stored when the stream was stopped
    reconnects: int = 0


class Follower:
    def __init__(self, client: Client, project: str, accept: Callable[[bytes], Response], *,
                 types: list[str] | None = None, label_keys: list[str] | None = None,
                 ping_interval_s: float = 10.0, log: TextIO | None = None, history_lag_s: float = HISTORY_LAG_S,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.project = project
        self.accept = accept
        self.types = list(types or [])
        self.label_keys = list(label_keys or [])
        self.ping_interval_s = ping_interval_s
        self.log = log
        self.history_lag_s = history_lag_s
        self.clock = clock
        self.stats = Stats()
        self.devices: dict[str, dict] = {}
        self._devices_loaded_at: float | None = None
        self._unknown: dict[str, float] = {}  # device id -> monotonic time to look it up again
        self.last_seen: datetime | None = None  # newest event stored (or refused for good)
        self.gap_from: datetime | None = None  # earliest start not fetched yet after a disconnect
        self.recheck: tuple[float, datetime] | None = None  # (due, from): fetch again when history caught up
        self.connected = threading.Event()  # set while a stream is open (tests wait on it)
        self._stop = threading.Event()

    def _say(self, text: str) -> None:
        print(f"stream: {text}", file=self.log or sys.stderr, flush=True)

    # --- devices ----------------------------------------------------------------------

    def _device(self, device_id: str) -> dict | None:
        """DT's device resource for the body's labels and metadata. An unknown device reloads
        the list at most every `DEVICE_RELOAD_MIN_S`, and is then not looked up again for
        `UNKNOWN_DEVICE_TTL_S`: a stream of events from a device the list does not have costs
        no API call per event."""
        found = self.devices.get(device_id)
        if found is not None:
            return found
        now = self.clock()
        if self._unknown.get(device_id, 0.0) > now:
            return None
        if self._devices_loaded_at is None or now - self._devices_loaded_at >= DEVICE_RELOAD_MIN_S:
            self._load_devices()
        found = self.devices.get(device_id)
        if found is None:
            if len(self._unknown) >= MAX_UNKNOWN_DEVICES:
                self._unknown = {k: t for k, t in self._unknown.items() if t > now}
                if len(self._unknown) >= MAX_UNKNOWN_DEVICES:
                    self._unknown.clear()
            self._unknown[device_id] = now + UNKNOWN_DEVICE_TTL_S
        return found

    def _load_devices(self) -> None:
        self.devices = {d["name"].rsplit("/", 1)[-1]: d for d in self.client.devices(self.project)}
        self._devices_loaded_at = self.clock()
        self._unknown = {k: t for k, t in self._unknown.items() if k not in self.devices}

    # --- one event --------------------------------------------------------------------

    def _feed(self, event: object, backfilled: bool = False) -> None:
        reason = malformed_reason(event)
        if reason is not None:
            self.stats.malformed += 1
            ident = printable(event.get("eventId"), 40) if isinstance(event, dict) else "?"
            self._say(f"skipping a malformed event from DT (eventId {ident}): {reason}")
            return
        body = connector_body(event, self._device(device_id_of(event)), self.project, self.label_keys)
        response = self._store(body, event["eventId"])
        if response is None:
            return  # stopped while the store was failing: not stored, not counted as seen
        if backfilled:
            self.stats.backfilled += 1
        else:
            self.stats.streamed += 1
        if response.status == 202:
            self.stats.accepted += 1
        elif 200 <= response.status < 300:
            self.stats.duplicates += 1
        else:
            self.stats.rejected += 1
            self._say(f"the receiver refused event {printable(event['eventId'], 40)} for good "
                      f"({response.status}: {printable(reason_of(response))})")
        ts = parse_rfc3339(event["timestamp"])
        if self.last_seen is None or ts > self.last_seen:
            self.last_seen = ts

    def _store(self, body: bytes, event_id: str) -> Response | None:
        """`accept` until the answer is not a 503; None if the stream is stopped first."""
        delay = 0.1
        while True:
            response = self.accept(body)
            if response.status != 503:
                if delay > 0.1:
                    self._say("the receiver's store works again")
                return response
            if delay == 0.1:
                self._say(f"the receiver's store failed ({printable(reason_of(response))}); retrying event "
                          f"{printable(event_id, 40)} until it is stored")
            self.stats.store_retries += 1
            if self._stop.wait(delay):
                self.stats.unstored += 1
                return None
            delay = min(delay * 2, STORE_RETRY_MAX_S)

    # --- gaps ---------------------------------------------------------------------------

    def backfill_gap(self, since: datetime) -> int:
        """Everything in history since `since`, oldest first, through the receiver."""
        self._load_devices()
        until = datetime.now(timezone.utc) + timedelta(seconds=1)
        events: list = []
        for device_id in self.devices:
            events += self.client.events(self.project, device_id, rfc3339(since - GAP_OVERLAP), rfc3339(until),
                                         self.types)
        good = [e for e in events if malformed_reason(e) is None]
        for e in events:
            if malformed_reason(e) is not None:
                self._feed(e, backfilled=True)  # named and counted
        good.sort(key=lambda e: parse_rfc3339(e["timestamp"]))
        for e in good:
            if self._stop.is_set():
                break
            self._feed(e, backfilled=True)
        return len(good)

    def _fetch_gap(self) -> None:
        """At a reconnect: fetch the pending gap; schedule the re-check (the earliest start of
        every gap not re-checked yet, due `history_lag_s` after this reconnect)."""
        since = self.gap_from
        if since is None:
            return
        n = self.backfill_gap(since)  # a DTError leaves gap_from as it is: the next reconnect retries it
        self.gap_from = None
        self._say(f"reconnected; backfilled {n} events since {rfc3339(since)}")
        earliest = since if self.recheck is None else min(since, self.recheck[1])
        self.recheck = (self.clock() + self.history_lag_s, earliest)

    def _recheck_if_due(self) -> None:
        if self.recheck is None or self.clock() < self.recheck[0]:
            return
        since = self.recheck[1]
        n = self.backfill_gap(since)
        self.recheck = None
        self._say(f"history re-checked after {self.history_lag_s:g} s: {n} events in the gap since {rfc3339(since)}")

    # --- the stream -------------------------------------------------------------------

    def _event_of(self, raw: bytes) -> dict | None:
        """The event of one stream line; None for a ping; DTError for what is not DT's."""
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            raise DTError(f"DT's stream sent a line that is not JSON: {printable(raw[:80])}") from None
        if isinstance(payload, dict) and "error" in payload:
            error = payload["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise DTError(f"DT ended the stream: {printable(message, 200)}", retryable=True)
        result = payload.get("result") if isinstance(payload, dict) else None
        event = result.get("event") if isinstance(result, dict) else None
        if not isinstance(event, dict):
            raise DTError(f"DT's stream sent a line that is not an event: {printable(raw[:80])}")
        return None if event.get("eventType") == "ping" else event

    def run(self, stop: threading.Event) -> None:
        """Follow until `stop` is set. Raises DTError for what retrying cannot fix."""
        self._stop = stop
        params: dict = {"ping_interval": f"{self.ping_interval_s:g}s"}
        if self.types:
            params["event_types"] = self.types
        backoff = 0.5
        started = datetime.now(timezone.utc)
        first = True
        while not stop.is_set():
            try:
                for raw in self.client.stream_lines(self.project, params, read_timeout_s=2 * self.ping_interval_s):
                    if not self.connected.is_set():
                        self.connected.set()
                        if first:
                            self._say(f"following project {printable(self.project)}")
                            first = False
                        self._fetch_gap()
                        backoff = 0.5
                    self._recheck_if_due()
                    if stop.is_set():
                        break
                    if raw:
                        event = self._event_of(raw)
                        if event is not None:
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
            finally:
                if not first and self.gap_from is None:
                    self.gap_from = self.last_seen or started  # the earliest unfetched start
                self.connected.clear()
            if stop.is_set():
                break
            self.stats.reconnects += 1
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def local_pipeline(db: str, env=None):
    """The local receiver, as `dtconnector serve` builds it (worker, handlers, state, dead
    letters), and its `accept_verified`, into which the stream feeds events."""
    from local_receiver.app import LocalApp

    # No HTTP front end exists here, so nothing is ever verified; a throwaway secret only keeps
    # the receiver's start-up check from warning that none is configured.
    settings = Settings.from_env(env, secrets=(Secret(secrets.token_urlsafe(32)),), signature_mode="secret")
    app = LocalApp(db, settings)
    app.take_ownership()
    app.start_worker()
    return app, app.receiver.accept_verified
