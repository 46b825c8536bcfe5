"""The delivery engine: sends events the way DT Cloud's Data Connector does.

- One signed POST per event, many in flight at once (`concurrency` threads, each with its
  own keep-alive `http.client` connection; standard library only).
- A response is an acknowledgement only if it is 2xx within `timeout_s` (DT: 10 s).
  Anything else (non-2xx, timeout, refused or reset connection) is retried with
  exponential backoff and jitter until it is acknowledged or the event is older than
  `max_age_s` (DT: 12 hours), when it is given up. DT does not publish its backoff
  schedule; the defaults here (1 s doubling up to 5 min, each delay 50-100 % of that)
  are an assumption.
- Each attempt is signed afresh (new `iat`, `exp`, `jti`), as a queued event would be.
- Optional duplicates (a share of events delivered twice, each copy on its own until
  acknowledged, usually close together, sometimes concurrently) and out-of-order delivery.

An event's age counts from when it entered the emulator's queue (its first scheduled
send), like DT's queue, not from its `timestamp`, so replayed old bodies are still sent.
"""

from __future__ import annotations

import heapq
import http.client
import json
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlsplit

from .signing import DT_ISSUER, sign, sign_asymmetric

DT_TIMEOUT_S = 10.0
DT_MAX_AGE_S = 12 * 3600.0
USER_AGENT = "dtconnector-emulator/0.1"


@dataclass
class Delivery:
    body: bytes
    event_id: str | None
    duplicate: bool = False
    born: float = 0.0  # monotonic time the event entered the queue
    attempts: int = 0


@dataclass
class SendConfig:
    url: str
    secret: str | None = None
    concurrency: int = 8
    timeout_s: float = DT_TIMEOUT_S
    max_age_s: float = DT_MAX_AGE_S
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    duplicates: float = 0.0
    shuffle: bool = False
    rate: float | None = None  # new events per second; None = as fast as possible
    headers: Sequence[tuple[str, str]] = ()
    seed: int | None = None
    progress: bool | None = None  # None: only when stderr is a terminal
    # DT-Asymmetric-Signature (ES256): a loaded EC P-256 private key, its kid, iss and sub.
    asymmetric_key: object | None = None
    kid: str | None = None
    issuer: str = DT_ISSUER
    org: str | None = None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


@dataclass
class Summary:
    url: str
    events: int = 0  # unique events
    deliveries: int = 0  # events + duplicate copies
    sent: int = 0  # HTTP requests made
    accepted: int = 0  # deliveries acknowledged with 2xx
    retried: int = 0  # requests that repeated a failed attempt
    given_up: int = 0  # deliveries dropped after max age
    duplicates_sent: int = 0  # duplicate copies delivered (at least one request each)
    statuses: dict = field(default_factory=dict)  # "202"/"503"/"timeout"/"error" -> count
    elapsed_s: float = 0.0
    latencies_s: list = field(default_factory=list, repr=False)  # of 2xx answers
    given_up_ids: list = field(default_factory=list)
    interrupted: bool = False

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self) -> dict:
        values = sorted(self.latencies_s)
        out = {}
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            v = percentile(values, q)
            out[name] = None if v is None else round(v * 1000, 3)
        out["max"] = round(values[-1] * 1000, 3) if values else None
        return out

    def to_dict(self) -> dict:
        return {
            "url": self.url,
            "events": self.events,
            "deliveries": self.deliveries,
            "sent": self.sent,
            "accepted": self.accepted,
            "retried": self.retried,
            "given_up": self.given_up,
            "duplicates_sent": self.duplicates_sent,
            "statuses": dict(sorted(self.statuses.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "ack_latency_ms": self.latency_ms(),
            "given_up_ids": self.given_up_ids[:50],
            "interrupted": self.interrupted,
        }

    def text(self) -> str:
        lat = self.latency_ms()

        def ms(v):
            return "-" if v is None else f"{v:.1f} ms"

        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())) or "-"
        lines = [
            f"sent {self.sent} requests for {self.events} events to {self.url} in {self.elapsed_s:.2f} s"
            + (" (interrupted)" if self.interrupted else ""),
            f"  accepted        {self.accepted} of {self.deliveries} deliveries ({self.events_per_s:.0f}/s)",
            f"  retried         {self.retried}",
            f"  given up        {self.given_up}",
            f"  duplicates sent {self.duplicates_sent}",
            f"  answers         {statuses}",
            f"  ack latency     p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  p99 {ms(lat['p99'])}",
        ]
        return "\n".join(lines)


def event_id_of(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
        value = doc["event"]["eventId"]
        return value if isinstance(value, str) else None
    except (ValueError, KeyError, TypeError):
        return None


def plan(
    bodies: Sequence[bytes],
    *,
    duplicates: float = 0.0,
    shuffle: bool = False,
    window: int = 16,
    rng: random.Random | None = None,
) -> list[Delivery]:
    """The order deliveries start in. Duplicate copies are placed a few positions after
    their original (so they arrive close together and sometimes concurrently); `shuffle`
    then puts everything in random order."""
    rng = rng or random.Random()
    if not 0.0 <= duplicates <= 1.0:
        raise ValueError("duplicates must be a share between 0 and 1")
    keyed: list[tuple[float, Delivery]] = []
    for i, body in enumerate(bodies):
        keyed.append((float(i), Delivery(body, event_id_of(body))))
    n_dup = int(round(duplicates * len(bodies)))
    for i in rng.sample(range(len(bodies)), n_dup):
        original = keyed[i][1]
        keyed.append((i + rng.uniform(0.5, window), Delivery(original.body, original.event_id, duplicate=True)))
    keyed.sort(key=lambda kv: kv[0])
    order = [d for _, d in keyed]
    if shuffle:
        rng.shuffle(order)
    return order


class _Scheduler:
    """Deliveries by due time; `get` blocks until one is due, None once all are done."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Delivery]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self.outstanding = 0
        self.stopped = False

    def add(self, delivery: Delivery, due: float, new: bool = True) -> None:
        with self._cond:
            self._seq += 1
            if new:
                self.outstanding += 1
            heapq.heappush(self._heap, (due, self._seq, delivery))
            self._cond.notify()

    def get(self) -> Delivery | None:
        with self._cond:
            while True:
                if self.stopped or self.outstanding == 0:
                    return None
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(min(wait, 0.5))
                else:
                    self._cond.wait(0.5)

    def finished(self) -> None:
        with self._cond:
            self.outstanding -= 1
            if self.outstanding == 0:
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


class Sender:
    def __init__(self, config: SendConfig):
        self.config = config
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("--url must be an http:// or https:// URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._sched = _Scheduler()
        self.summary = Summary(config.url)

    # --- one HTTP attempt ---------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.config.timeout_s)

    def _headers(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        for name, value in self.config.headers:
            headers[name] = value
        if self.config.secret:
            headers["X-Dt-Signature"] = sign(body, self.config.secret)
        if self.config.asymmetric_key is not None:
            headers["DT-Asymmetric-Signature"] = sign_asymmetric(
                body, self.config.asymmetric_key, self.config.kid, issuer=self.config.issuer, sub=self.config.org
            )
        return headers

    def attempt(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[str, float]:
        """POST once. Returns (status text: "202", "timeout" or "error", seconds)."""
        headers = self._headers(body)
        start = time.perf_counter()
        try:
            conn.request("POST", self._path, body, headers)
            response = conn.getresponse()
            response.read()
            status = str(response.status)
            if response.will_close:
                conn.close()
        except (socket.timeout, TimeoutError):
            conn.close()
            status = "timeout"
        except (OSError, http.client.HTTPException):
            conn.close()
            status = "error"
        return status, time.perf_counter() - start

    def _backoff(self, attempts: int) -> float:
        ceiling = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** (attempts - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

    # --- the loop -----------------------------------------------------------------

    def _worker(self) -> None:
        conn = self._connection()
        s = self.summary
        try:
            while True:
                d = self._sched.get()
                if d is None:
                    return
                d.attempts += 1
                status, seconds = self.attempt(conn, d.body)
                ok = status.isdigit() and 200 <= int(status) < 300
                now = time.monotonic()
                with self._lock:
                    s.sent += 1
                    s.statuses[status] = s.statuses.get(status, 0) + 1
                    if d.attempts > 1:
                        s.retried += 1
                    elif d.duplicate:
                        s.duplicates_sent += 1
                    if ok:
                        s.accepted += 1
                        s.latencies_s.append(seconds)
                    elif now - d.born >= self.config.max_age_s:
                        s.given_up += 1
                        if d.event_id:
                            s.given_up_ids.append(d.event_id)
                if ok or now - d.born >= self.config.max_age_s:
                    self._sched.finished()
                else:
                    due = min(now + self._backoff(d.attempts), d.born + self.config.max_age_s)
                    self._sched.add(d, due, new=False)
        finally:
            conn.close()

    def _progress(self, stop: threading.Event, total: int) -> None:
        s = self.summary
        start = time.monotonic()
        while not stop.wait(0.25):
            done = s.accepted + s.given_up
            frac = done / total if total else 1.0
            bar = "#" * int(frac * 30)
            rate = s.accepted / max(time.monotonic() - start, 1e-9)
            sys.stderr.write(
                f"\r[{bar:<30}] {done}/{total} accepted {s.accepted} retried {s.retried} "
                f"given up {s.given_up} {rate:.0f}/s "
            )
            sys.stderr.flush()
        sys.stderr.write("\r" + " " * 100 + "\r")
        sys.stderr.flush()

    def run(self, bodies: Sequence[bytes], on_start: Callable[[], None] | None = None) -> Summary:
        cfg = self.config
        deliveries = plan(bodies, duplicates=cfg.duplicates, shuffle=cfg.shuffle, rng=self._rng)
        s = self.summary
        s.events = len(bodies)
        s.deliveries = len(deliveries)
        start = time.monotonic()
        for i, d in enumerate(deliveries):
            due = start + (i / cfg.rate if cfg.rate else 0.0)
            d.born = due
            self._sched.add(d, due)
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        stop_progress = threading.Event()
        threads = [
            threading.Thread(target=self._worker, name=f"dt-sender-{i}", daemon=True)
            for i in range(max(1, cfg.concurrency))
        ]
        if show:
            threads.append(threading.Thread(target=self._progress, args=(stop_progress, len(deliveries)), daemon=True))
        if on_start:
            on_start()
        for t in threads:
            t.start()
        try:
            for t in threads[: max(1, cfg.concurrency)]:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            s.interrupted = True
            self._sched.stop()
            for t in threads[: max(1, cfg.concurrency)]:
                t.join(cfg.timeout_s + 1)
        finally:
            stop_progress.set()
            if show:
                threads[-1].join(1)
        s.elapsed_s = time.monotonic() - start
        return s


def send(bodies: Sequence[bytes], config: SendConfig) -> Summary:
    return Sender(config).run(bodies)
