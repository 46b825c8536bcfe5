"""Driving a platform in-process the way DT does, through a test `Harness`.

- `ProcessDied`: a crash (kill -9, OOM, lost container). It derives from BaseException so
  it escapes every ``except Exception`` in core and the platform, as a vanished process
  would leave things: no cleanup, no answer.
- `deliver_until_acked`: DT's delivery loop for one event: sign afresh, POST, and retry
  anything that is not 2xx (or no answer at all) with a short backoff.
- `Probe`: the user's handler, counting completed runs per event id and always failing
  on poison devices.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from emulator.signing import sign

from .workload import POISON_PREFIX

ACK = range(200, 300)


class ProcessDied(BaseException):
    """The process vanished mid-step (escapes `except Exception`, like a crash would)."""


class NotAcknowledged(AssertionError):
    pass


@dataclass
class Delivery:
    status: int | None  # the status that acknowledged it
    attempts: list[int | None] = field(default_factory=list)  # None = no answer (crash)
    latencies: list[float] = field(default_factory=list)


def deliver_until_acked(
    harness,
    body: bytes,
    secret: str,
    *,
    timeout_s: float = 60.0,
    backoff_s: float = 0.02,
    max_backoff_s: float = 0.25,
    retry_on: Callable[[int], bool] = lambda status: status not in ACK,
    headers: dict | None = None,
) -> Delivery:
    """POST `body` until a 2xx (DT retries everything else, and a request that never got an
    answer). Each attempt carries a freshly signed token, as a queued DT event would."""
    result = Delivery(None)
    deadline = time.monotonic() + timeout_s
    delay = backoff_s
    while True:
        sent = {"X-Dt-Signature": sign(body, secret), "Content-Type": "application/json", **(headers or {})}
        started = time.perf_counter()
        try:
            status = harness.deliver(body, sent).status
        except ProcessDied:
            status = None
        result.latencies.append(time.perf_counter() - started)
        result.attempts.append(status)
        if status is not None and not retry_on(status):
            result.status = status
            return result
        if status is not None and status < 500 and status != 429:
            raise NotAcknowledged(f"a valid event got {status}: DT would retry it for 12 hours")
        if time.monotonic() > deadline:
            raise NotAcknowledged(f"not acknowledged within {timeout_s} s: {result.attempts[-10:]}")
        time.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


def deliver_all(harness, bodies: Sequence[bytes], secret: str, concurrency: int = 1, **kwargs) -> list[Delivery]:
    """Deliver every body (DT sends in parallel, never waiting for one to finish)."""
    if concurrency <= 1:
        return [deliver_until_acked(harness, b, secret, **kwargs) for b in bodies]
    with ThreadPoolExecutor(concurrency, thread_name_prefix="dt-sender") as pool:
        return list(pool.map(lambda b: deliver_until_acked(harness, b, secret, **kwargs), bodies))


class Probe:
    """Counts completed handler runs per event id; always fails on poison devices."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # started
        self.completed: Counter[str] = Counter()  # returned normally

    def install(self, registry=None) -> "Probe":
        if registry is None:
            from core.handlers import registry
        probe = self

        @registry.on("*")
        def reliability_probe(event):
            with probe._lock:
                probe.calls[event.event_id] += 1
            if event.device_id.startswith(POISON_PREFIX):
                raise RuntimeError("this handler always fails on poison devices")
            with probe._lock:
                probe.completed[event.event_id] += 1

        return self


def state_snapshot(harness, devices: Iterable[str]) -> dict[tuple[str, str], str]:
    """(device, type) -> id of the event the platform stored as that device's latest."""
    out = {}
    for device in devices:
        for event_type, state in harness.device_state(device).items():
            out[(device, event_type)] = state.event_id
    return out


def event_id(body: bytes) -> str:
    return json.loads(body)["event"]["eventId"]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]
