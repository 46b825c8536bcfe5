"""The local receiver's metrics, kept in memory and served as Prometheus text at
``GET /metrics`` (exposition format 0.0.4).

Written here rather than with `prometheus_client`: the receiver's only dependency is
PyJWT, and what it needs is a few dictionaries under one lock: a counter is one dict
update on the request path, a scrape formats them. The tests parse the output with
`prometheus_client`'s own parser. Counters restart at zero with the process, as
Prometheus expects (it handles resets in ``rate()``/``increase()``).
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Callable

from core.metrics import METRICS, PROMETHEUS_CONTENT_TYPE, QUEUE_BACKLOG, Recorder

#: Histogram buckets (seconds): from ack latencies of milliseconds to an hour of lag.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CONTENT_TYPE = PROMETHEUS_CONTENT_TYPE

_INF = 'le="+Inf"'
_Key = tuple[str, tuple[tuple[str, str], ...]]


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...], extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in pairs]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class PrometheusRecorder(Recorder):
    def __init__(self, gauges: dict[str, Callable[[], float]] | None = None):
        self._lock = threading.Lock()
        self._counters: dict[_Key, float] = {}
        self._histograms: dict[_Key, list] = {}  # key -> [bucket counts..., sum, count]
        self._gauges: dict[_Key, float] = {}
        #: Gauges read at scrape time (the queue backlog: one COUNT, not one per event).
        self.live_gauges = dict(gauges or {})

    def count(self, name: str, value: float = 1, **dims: str) -> None:
        key = (name, tuple(dims.items()))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value

    def observe(self, name: str, value: float, **dims: str) -> None:
        key = (name, tuple(dims.items()))
        index = bisect.bisect_left(BUCKETS, value)
        with self._lock:
            h = self._histograms.get(key)
            if h is None:
                h = self._histograms[key] = [0] * (len(BUCKETS) + 2)
            if index < len(BUCKETS):
                h[index] += 1
            h[-2] += value
            h[-1] += 1

    def gauge(self, name: str, value: float, **dims: str) -> None:
        with self._lock:
            self._gauges[(name, tuple(dims.items()))] = value

    def snapshot(self) -> tuple[dict, dict, dict]:
        """Copies of (counters, histograms, gauges), live gauges read now."""
        live = {}
        for name, read in self.live_gauges.items():
            try:
                live[(name, ())] = float(read())
            except Exception:  # a scrape must not fail because the store is busy
                continue
        with self._lock:
            gauges = {**self._gauges, **live}
            return dict(self._counters), {k: list(v) for k, v in self._histograms.items()}, gauges

    def exposition(self) -> str:
        counters, histograms, gauges = self.snapshot()
        out: list[str] = []
        for name, (kind, _unit, help_text) in METRICS.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            if kind == "counter":
                for (n, pairs), value in sorted(counters.items()):
                    if n == name:
                        out.append(f"{name}{_labels(pairs)} {_num(value)}")
            elif kind == "gauge":
                for (n, pairs), value in sorted(gauges.items()):
                    if n == name:
                        out.append(f"{name}{_labels(pairs)} {_num(value)}")
            else:
                for (n, pairs), h in sorted(histograms.items()):
                    if n != name:
                        continue
                    cumulative = 0
                    for bound, hits in zip(BUCKETS, h):
                        cumulative += hits
                        le = 'le="' + _num(bound) + '"'
                        out.append(f"{name}_bucket{_labels(pairs, le)} {cumulative}")
                    out.append(f"{name}_bucket{_labels(pairs, _INF)} {h[-1]}")
                    out.append(f"{name}_sum{_labels(pairs)} {_num(h[-2])}")
                    out.append(f"{name}_count{_labels(pairs)} {h[-1]}")
        return "\n".join(out) + "\n"


def backlog_gauges(depth: Callable[[], int]) -> dict[str, Callable[[], float]]:
    return {QUEUE_BACKLOG: depth}
