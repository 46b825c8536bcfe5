"""Times on the command line: RFC 3339 (`2026-03-01T12:00:00Z`) or an age (`3d`, `12h`, `90m`).

DT's history API wants RFC 3339 UTC; people think in "since the outage started 3 days ago".
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
HISTORY_DAYS = 31  # DT keeps 31 days of event history


def parse_when(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    m = _AGE.fullmatch(text.strip().lower())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: float(m.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (RFC 3339 like 2026-03-01T12:00:00Z, or 3d, 12h)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    """DT's timestamps, with 6 or 9 fractional digits (nanoseconds cut to microseconds)."""
    text = text.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m and m.group(2) and len(m.group(2)) > 7:
        text = m.group(1) + m.group(2)[:7] + m.group(3)
    return datetime.fromisoformat(text)
