"""The local receiver's metrics, kept in memory and served as Prometheus text at
``GET /metrics`` (exposition format 0.0.4).

Two processes count: the web process (ingest answers) and the worker process (handler
runs, lag, retries, dead letters). The worker stores a snapshot of its counters in the
SQLite file (`MetricsRows`) with a batch's commit, at most every half second while it is
busy and at once when the queue empties (`local_receiver.app.LocalWorker`), and the web
process merges the stored snapshots into its own at each scrape. So the worker's
counters survive its restarts (they continue from the stored snapshot) and lag its work
by at most that half second; the web process's restart at zero with it, as Prometheus
expects (it handles resets in ``rate()``/``increase()``).

Why not `prometheus_client`'s multiprocess mode: it is switched on for the whole
process by an environment variable (``PROMETHEUS_MULTIPROC_DIR``), which in a mounted
receiver (`LocalApp.asgi()` inside someone's Starlette or Flask service) would also turn
the host application's own `prometheus_client` metrics into multiprocess ones; it keeps
one memory-mapped file per process id, which a crash-looping worker multiplies; and the
receiver needs only a few dictionaries under one lock (a counter is one dict update on
the request path). The tests parse our output with `prometheus_client`'s own parser.

Every label comes from a bounded set (see `core.metrics`), so the text is bounded
whatever requests arrive; `core.asgi` builds it off the event loop and caches it.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from typing import Callable, Iterable

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

    def export(self) -> str:
        """The counters and histograms as JSON, for another process to merge (`load`, `exposition`)."""
        with self._lock:
            return json.dumps({
                "counters": [[name, pairs, value] for (name, pairs), value in self._counters.items()],
                "histograms": [[name, pairs, h] for (name, pairs), h in self._histograms.items()],
            })

    def load(self, exported: str) -> None:
        """Continue from an `export` of an earlier run of the same process role."""
        counters, histograms = _parse_export(exported)
        with self._lock:
            for key, value in counters.items():
                self._counters[key] = self._counters.get(key, 0) + value
            for key, h in histograms.items():
                _add_histogram(self._histograms, key, h)

    def exposition(self, others: Iterable[str] = ()) -> str:
        """Prometheus text of this recorder plus the `export`s of other processes."""
        counters, histograms, gauges = self.snapshot()
        for exported in others:
            try:
                more_counters, more_histograms = _parse_export(exported)
            except (ValueError, TypeError, KeyError):  # a torn or foreign row: skip it, never fail a scrape
                continue
            for key, value in more_counters.items():
                counters[key] = counters.get(key, 0) + value
            for key, h in more_histograms.items():
                _add_histogram(histograms, key, h)
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


def _parse_export(exported: str) -> tuple[dict, dict]:
    data = json.loads(exported)
    counters = {(name, tuple(map(tuple, pairs))): float(value) for name, pairs, value in data["counters"]}
    histograms = {(name, tuple(map(tuple, pairs))): list(h) for name, pairs, h in data["histograms"]}
    return counters, histograms


def _add_histogram(into: dict, key: _Key, h: list) -> None:
    mine = into.get(key)
    if mine is None or len(mine) != len(h):
        into[key] = list(h)
    else:
        into[key] = [a + b for a, b in zip(mine, h)]


class MetricsRows:
    """The `metrics` table: one `PrometheusRecorder.export` per process role."""

    def __init__(self, db):
        self._db = db

    def save(self, role: str, recorder: PrometheusRecorder) -> None:
        """Stored with the caller's commit (inside a `Database.batch`), or the flusher's."""
        self._db.write(
            "INSERT INTO metrics (process, snapshot) VALUES (?, ?)"
            " ON CONFLICT (process) DO UPDATE SET snapshot = excluded.snapshot",
            (role, recorder.export()),
            durable=False,
        )

    def load(self, role: str) -> str | None:
        rows = self._db.query("SELECT snapshot FROM metrics WHERE process = ?", (role,))
        return rows[0][0] if rows else None

    def others(self, role: str) -> list[str]:
        return [row[0] for row in self._db.query("SELECT snapshot FROM metrics WHERE process <> ?", (role,))]


def backlog_gauges(depth: Callable[[], int]) -> dict[str, Callable[[], float]]:
    return {QUEUE_BACKLOG: depth}
