"""The emulator's delivery: events sent the way DT Cloud's Data Connector sends them.

The HTTP work (connection pool, concurrency, backoff, the first failure named at once, a
true account when a run stops) is the product's delivery engine, `dtcloud.delivery`, which
`backfill` uses too. What is added here is what only a stand-in for DT does:

- DT's signatures: `X-Dt-Signature` with the connector's secret, and `DT-Asymmetric-Signature`
  with a key of our own (`asymmetric_key`), each attempt signed afresh.
- Duplicates (a share of events delivered twice, each copy on its own until acknowledged,
  usually close together, sometimes concurrently) and out-of-order delivery (`plan`).
- DT's patience when asked (`patient`): every non-2xx, 4xx included, retried until `max_age_s`
  (DT: 12 h). By default a 4xx stops the run at once: it names a wrong secret or URL in the
  first second instead of retrying it for 12 hours. DT does not publish its backoff schedule;
  the defaults (1 s doubling up to 5 min, each delay 50-100 % of that) are an assumption.

An event's age counts from when it entered the emulator's queue (its first scheduled
send), like DT's queue, not from its `timestamp`, so replayed old bodies are still sent.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from dtcloud.delivery import DT_TIMEOUT_S, HINTS, Engine, Item, Policy, Tally

from .signing import DT_ISSUER, sign, sign_asymmetric

DT_MAX_AGE_S = 12 * 3600.0
USER_AGENT = "dtconnector-emulator/0.1"
SEND_HINTS = {**HINTS, 401: "check the secret (--secret or DT_SIGNATURE_SECRET)"}


@dataclass
class Delivery:
    body: bytes
    event_id: str | None
    duplicate: bool = False


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
    patient: bool = False  # retry 4xx too, as DT does (else the first 4xx stops the run)
    report: Callable[[str], None] | None = None  # the first failure of each kind, as it happens
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


class Summary:
    """What `send` reports, read live from the engine's `Tally` (tests watch it mid-run)."""

    def __init__(self, tally: Tally, events: int = 0, deliveries: int = 0):
        self.tally = tally
        self.events = events  # unique events
        self.deliveries = deliveries  # events + duplicate copies
        self.duplicates_sent = 0  # duplicate copies tried (at least one request each)

    url = property(lambda self: self.tally.url)
    sent = property(lambda self: self.tally.requests)
    accepted = property(lambda self: self.tally.acknowledged)  # deliveries acknowledged with 2xx
    retried = property(lambda self: self.tally.retried)
    given_up = property(lambda self: sum(self.tally.given_up.values()))  # after max age
    refused = property(lambda self: sum(self.tally.refused.values()))  # ended by a 4xx
    not_tried = property(lambda self: self.tally.not_tried)
    statuses = property(lambda self: self.tally.statuses)  # "202"/"503"/"timeout"/"error" -> count
    elapsed_s = property(lambda self: self.tally.elapsed_s)
    latencies_s = property(lambda self: self.tally.latencies_s)
    given_up_ids = property(lambda self: self.tally.given_up_labels)
    interrupted = property(lambda self: self.tally.interrupted)
    stopped = property(lambda self: self.tally.stopped)

    @property
    def unacknowledged(self) -> int:
        return self.deliveries - self.accepted

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
        t = self.tally
        return {
            "url": self.url,
            "events": self.events,
            "deliveries": self.deliveries,
            "sent": self.sent,
            "accepted": self.accepted,
            "retried": self.retried,
            "given_up": self.given_up,
            "refused": dict(sorted(t.refused.items())),
            "not_tried": self.not_tried,
            "unacknowledged": self.unacknowledged,
            "duplicates_sent": self.duplicates_sent,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(sorted(t.errors.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "ack_latency_ms": self.latency_ms(),
            "given_up_ids": self.given_up_ids[:50],
            "stopped": self.stopped,
            "interrupted": self.interrupted,
        }

    def text(self) -> str:
        lat = self.latency_ms()

        def ms(v):
            return "-" if v is None else f"{v:.1f} ms"

        t = self.tally
        end = " (interrupted)" if self.interrupted else f" (stopped: {self.stopped})" if self.stopped else ""
        lines = [
            f"sent {self.sent} requests for {self.events} events to {self.url} in {self.elapsed_s:.2f} s{end}",
            f"  accepted        {self.accepted} of {self.deliveries} deliveries ({self.events_per_s:.0f}/s)",
            f"  retried         {self.retried}",
            f"  given up        {self.given_up}",
        ]
        if t.refused:
            lines.append(f"  refused (4xx)   {self.refused} ("
                         + ", ".join(f"{k}: {v}" for k, v in sorted(t.refused.items())) + ")")
        if t.unanswered:
            lines.append(f"  unanswered      {sum(t.unanswered.values())} (tried, not acknowledged when stopped)")
        if self.not_tried:
            lines.append(f"  not tried       {self.not_tried}")
        lines += [
            f"  duplicates sent {self.duplicates_sent}",
            f"  answers         {t.answers()}",
            f"  ack latency     p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  p99 {ms(lat['p99'])}",
        ]
        if self.unacknowledged:
            lines.append(f"  NOT acknowledged: {self.unacknowledged} of {self.deliveries} deliveries")
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


class Sender:
    def __init__(self, config: SendConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        policy = Policy(concurrency=config.concurrency, timeout_s=config.timeout_s, max_age_s=config.max_age_s,
                        retry_base_s=config.retry_base_s, retry_max_s=config.retry_max_s, rate=config.rate,
                        retry_refused=config.patient)
        self.engine = Engine(config.url, policy, sign=self._signature, headers=config.headers,
                             report=config.report, hints=SEND_HINTS, user_agent=USER_AGENT,
                             stop_note="" if config.patient else " (--patient retries a 4xx as DT does)")
        self.summary = Summary(self.engine.tally)

    def _signature(self, body: bytes) -> dict:
        cfg = self.config
        headers = {}
        if cfg.secret:
            headers["X-Dt-Signature"] = sign(body, cfg.secret)
        if cfg.asymmetric_key is not None:
            headers["DT-Asymmetric-Signature"] = sign_asymmetric(body, cfg.asymmetric_key, cfg.kid,
                                                                 issuer=cfg.issuer, sub=cfg.org)
        return headers

    def _progress(self, stop: threading.Event, total: int) -> None:
        t = self.engine.tally
        start = time.monotonic()
        while not stop.wait(0.25):
            ended = t.acknowledged + sum(t.refused.values()) + sum(t.given_up.values())
            bar = "#" * int((ended / total if total else 1.0) * 30)
            rate = t.acknowledged / max(time.monotonic() - start, 1e-9)
            sys.stderr.write(f"\r[{bar:<30}] {ended}/{total} accepted {t.acknowledged} retried {t.retried} "
                             f"given up {sum(t.given_up.values())} {rate:.0f}/s ")
            sys.stderr.flush()
        sys.stderr.write("\r" + " " * 100 + "\r")
        sys.stderr.flush()

    def run(self, bodies: Sequence[bytes], on_start: Callable[[], None] | None = None) -> Summary:
        cfg = self.config
        deliveries = plan(bodies, duplicates=cfg.duplicates, shuffle=cfg.shuffle, rng=self._rng)
        items = [Item(d.body, d.event_id) for d in deliveries]
        self.summary.events, self.summary.deliveries = len(bodies), len(deliveries)
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        stop_progress = threading.Event()
        bar = threading.Thread(target=self._progress, args=(stop_progress, len(items)), daemon=True)
        if show:
            bar.start()
        try:
            self.engine.run_items(items, on_start)
        finally:
            stop_progress.set()
            if show:
                bar.join(1)
            self.engine.close()
        self.summary.duplicates_sent = sum(1 for d, i in zip(deliveries, items) if d.duplicate and i.attempts)
        return self.summary


def send(bodies: Sequence[bytes], config: SendConfig) -> Summary:
    return Sender(config).run(bodies)
