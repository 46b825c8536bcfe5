"""Durations and RFC 3339 times: the one parser and the one formatter of the project.

`parse_timestamp` reads a DT event's timestamp to the nanosecond (the device-state
version); `parse_rfc3339` and `parse_when` read what a person types or DT's REST API
returns; `rfc3339` and `rfc3339_ns` write them.

Why one module: every time option of every command takes the same syntax (`600`, `600s`,
`500ms`, `90m`, `12h`, `3d`), so nobody has to remember which option wants seconds; DT's
REST API speaks RFC 3339 UTC with up to nine fractional digits, which `datetime` cannot read
as is. Standard library only and no project imports: any module (core, a CLI, a test) may
import it without pulling anything else in.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_SYNTAX = "seconds, or a number with ms, s, m, h or d (e.g. 600, 600s, 90m, 12h, 3d)"


def parse_duration(text: str) -> float:
    """Seconds from ``600``, ``600s``, ``500ms``, ``90m``, ``12h`` or ``3d``.
    Raises ValueError with the accepted syntax in the message."""
    m = _DURATION.fullmatch(str(text).strip().lower())
    value = float(m.group(1)) * _UNIT_S[m.group(2)] if m else math.nan
    if not math.isfinite(value):
        raise ValueError(f"not a duration: {text!r} ({DURATION_SYNTAX})")
    return value


def duration_arg(text: str) -> float:
    """`parse_duration` for argparse (`type=duration_arg`): a bad value is a usage error."""
    import argparse  # here, not at the top: core.events imports this module on cold starts

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(seconds: float) -> str:
    """The shortest exact form `parse_duration` reads back: 43200 -> ``12h``, 90 -> ``90s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def rfc3339(value: datetime) -> str:
    """UTC with microseconds and a `Z`, as DT writes its timestamps."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_ns(ns: int, digits: int = 9) -> str:
    """``2024-05-29T10:34:03.970415001Z`` from integer epoch nanoseconds, with `digits`
    fractional digits (DT writes 6 or 9; 0 for whole seconds): `parse_timestamp` reads
    it back exactly."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 10 ** (9 - digits):0{digits}d}Z" if digits else f"{stamp}Z"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse_timestamp(value: object) -> tuple[datetime, int]:
    """A DT event timestamp (RFC 3339 with an offset) as (aware UTC datetime, integer nanoseconds since the epoch).

    DT sends 6 or 9 fractional digits; `datetime` keeps only 6, so the nanosecond integer
    is the version used for "only overwrite with a strictly newer event". The regex
    checks the shape, the `datetime` constructor (C code) the calendar, and the version is
    integer arithmetic: this runs twice per event, on ingest and in the worker. Raises
    ValueError with a fixed message (it never echoes the value).
    """
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    m = _RFC3339.fullmatch(value) or _RFC3339.fullmatch(value.strip())
    if not m:
        raise ValueError("timestamp is not RFC 3339")
    year, month, day, hour, minute, second, fraction, sign, offset_h, offset_m = m.groups()
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), nanos // 1000, timezone.utc)
    except ValueError:
        raise ValueError("timestamp is not a valid date and time") from None
    seconds = (dt.toordinal() - _EPOCH_ORDINAL) * 86_400 + dt.hour * 3600 + dt.minute * 60 + dt.second
    offset_s = 0
    if sign:
        offset_s = (int(offset_h) * 60 + int(offset_m)) * 60
        if sign == "+":
            offset_s = -offset_s
        seconds += offset_s
    version = seconds * 1_000_000_000 + nanos
    if not _INT64_MIN <= version <= _INT64_MAX:  # stores keep versions as signed 64-bit
        raise ValueError("timestamp is outside 1677-09-21..2262-04-11")
    if offset_s:  # checked first: near year 1 or 9999 the shift would overflow datetime
        dt += timedelta(seconds=offset_s)
    return dt, version


_FRACTION = re.compile(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$")


def parse_rfc3339(text: str) -> datetime:
    """An aware UTC datetime from RFC 3339 with 0 to 9 fractional digits (nanoseconds are cut
    to microseconds); a time without an offset is taken as UTC. Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    m = _FRACTION.match(value)
    if m and m.group(2) and len(m.group(2)) > 7:
        value = m.group(1) + m.group(2)[:7] + m.group(3)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A point in time from the command line: an RFC 3339 time, or a duration meaning that
    long ago (``3d``, ``12h``, ``600``). Raises ValueError naming both forms."""
    now = now or datetime.now(timezone.utc)
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (RFC 3339 like 2026-03-01T12:00:00Z, or an age: "
                         f"{DURATION_SYNTAX})") from None
