"""What `dtconnector stats` prints (the command itself is in `commands.py`):

- a receiver's metrics, read from a running receiver's ``GET /metrics`` (the counters
  live in the serving processes, since they started): `fetch`, `parse`, `print_metrics`;
- its store's size, read from the SQLite file (`local_receiver.retention.store_report`):
  records by kind and the oldest of each, so growth past the dedup window shows:
  `print_store`.
"""

from __future__ import annotations

import re
import sys
import urllib.request
from collections import defaultdict
from typing import TextIO

from core.metrics import (
    ACK_LATENCY,
    DEAD_LETTERED,
    END_TO_END_LAG,
    ENQUEUE_FAILURES,
    EVENTS_PROCESSED,
    HANDLER_RUNS,
    QUEUE_BACKLOG,
    REQUESTS,
    RETRIES,
    STALE_STATE_SKIPPED,
)

DEFAULT_URL = "http://127.0.0.1:8080/"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse(text: str) -> Samples:
    """Samples of the Prometheus text our receiver serves: name -> [(labels, value)]."""
    samples: Samples = defaultdict(list)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if line.startswith("#") or not match:
            continue
        name, labels, value = match.groups()
        pairs = {k: _unescape(v) for k, v in _LABEL.findall(labels or "")}
        samples[name].append((pairs, float(value)))
    return samples


def _total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == w for k, w in match.items()))


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.1f} s"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return _seconds(seconds)


def print_metrics(text: str, out: TextIO | None = None) -> None:
    """Print the metrics part of `dtconnector stats` from Prometheus text. `out` defaults
    to the current `sys.stdout`, looked up at each call (not bound at import)."""
    s = parse(text)
    w = (out or sys.stdout).write
    w(f"requests answered      {_total(s, REQUESTS):.0f}\n")
    for labels, value in sorted(s.get(REQUESTS, []), key=lambda item: (item[0].get("status", ""), -item[1])):
        w(f"  {labels.get('status', '?')} {labels.get('reason', '')}: {value:.0f}\n")
    count, total = _total(s, ACK_LATENCY + "_count"), _total(s, ACK_LATENCY + "_sum")
    if count:
        w(f"ack latency (mean)     {_seconds(total / count)}\n")
    w(f"enqueue failures       {_total(s, ENQUEUE_FAILURES):.0f}\n")
    w(f"events processed       {_total(s, EVENTS_PROCESSED):.0f}\n")
    errors = [(labels.get("handler", "?"), v) for labels, v in s.get(HANDLER_RUNS, []) if labels.get("outcome") == "error"]
    w(f"handler failures       {sum(v for _, v in errors):.0f}\n")
    for handler, value in sorted(errors):
        w(f"  {handler}: {value:.0f}\n")
    w(f"retries                {_total(s, RETRIES):.0f}\n")
    w(f"dead-lettered          {_total(s, DEAD_LETTERED):.0f}\n")
    w(f"stale state skipped    {_total(s, STALE_STATE_SKIPPED):.0f}\n")
    count, total = _total(s, END_TO_END_LAG + "_count"), _total(s, END_TO_END_LAG + "_sum")
    if count:
        w(f"end-to-end lag (mean)  {_seconds(total / count)}\n")
    if QUEUE_BACKLOG in s:
        w(f"queue backlog          {_total(s, QUEUE_BACKLOG):.0f}\n")


def fetch(url: str, timeout_s: float = 5.0, token: str | None = None) -> str:
    """The receiver's ``/metrics``; with ``DT_METRICS_TOKEN`` set (or `token`), sent as
    ``Authorization: Bearer``, as a receiver with that setting requires."""
    import os

    target = url.rstrip("/") + "/metrics"
    token = token or os.environ.get("DT_METRICS_TOKEN", "").strip()
    request = urllib.request.Request(target, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the user's own URL)
        return response.read().decode("utf-8")


def print_store(report: dict, out: TextIO | None = None) -> None:
    """Print the store part of `dtconnector stats` (a `StoreReport.to_dict`)."""
    w = (out or sys.stdout).write
    w(f"stored records         {report['total']}\n")
    for kind, count in report["records"].items():
        w(f"  {kind}: {count}\n")
    for kind, oldest in report["oldest"].items():
        age = oldest["ageS"]
        # claims store no write time: their "oldest" is the earliest expiry, usually ahead
        when = f"in {_duration(-age)}" if age < 0 else f"{_duration(age)} ago"
        w(f"oldest {kind.replace('_', ' ')}: {when}\n")
