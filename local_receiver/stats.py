"""`dtconnector stats`: what an operator checks on a local receiver, in one command.

- its metrics, read from a running receiver's ``GET /metrics`` (the counters live in the
  serving process, since it started): `print_metrics`;
- its store's size, read from the SQLite file: records by kind and the oldest of each, so
  growth past the dedup window shows (`local_receiver.retention.store_report`).

``--url`` alone asks for the metrics, ``--db`` alone for the store, neither for both.
"""

from __future__ import annotations

import argparse
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


def cmd_stats(args: argparse.Namespace) -> int:
    import json
    import time

    want_metrics = args.url is not None or args.db is None
    want_store = args.db is not None or args.url is None
    url = args.url or DEFAULT_URL
    result: dict = {}
    status = 0
    if want_store:
        from .cli import DEFAULT_DB, _open_existing
        from .retention import store_report

        result["store"] = store_report(_open_existing(args.db or DEFAULT_DB)).to_dict(time.time())
    if want_metrics:
        try:
            text = fetch(url)
        except OSError as exc:
            print(f"dtconnector: cannot read {url.rstrip('/')}/metrics ({exc}); is `dtconnector serve` running?",
                  file=sys.stderr)
            status = 1
        else:
            result["metrics"] = text
    if args.json:
        if "metrics" in result:
            result["metrics"] = {name: [[labels, value] for labels, value in samples]
                                 for name, samples in parse(result["metrics"]).items()}
        print(json.dumps(result, indent=2, sort_keys=True))
        return status
    if "metrics" in result:
        print_metrics(result["metrics"])
    if "store" in result:
        print_store(result["store"])
    return status


def add_stats_parser(sub) -> None:
    stats = sub.add_parser(
        "stats", help="a receiver's metrics (since it started) and its store's size",
        description="A running receiver's metrics (--url) and its store's size (--db); neither: both.",
        epilog="example:\n  dtconnector stats --db .dtconnector/events.db --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stats.add_argument("--url", help=f"the running receiver's address (default {DEFAULT_URL})")
    stats.add_argument("--db", help="the receiver's SQLite file (default .dtconnector/events.db)")
    stats.add_argument("--json", action="store_true", help="one JSON object instead of text")
    stats.set_defaults(func=cmd_stats)
