"""Metrics as l2met log lines on stdout, the convention Heroku's metrics add-ons (Librato,
and any l2met reader) turn into charts: ``count#`` adds, ``measure#`` records a value,
``sample#`` sets a gauge. No add-on, no network call: Logplex carries the line.

A metric's dimensions are folded into its name (``count#dt_requests_total.401.token_has_expired=1``)
because l2met readers key on the name alone; they are repeated as plain ``key=value`` pairs
so a line is readable and searchable too.
"""

from __future__ import annotations

import os
import re
from typing import TextIO

from core.metrics import MAX_CACHED_LINES, LineRecorder

_PREFIX = {"count": "count#", "observe": "measure#", "gauge": "sample#"}
_SLUG = re.compile(r"[^a-z0-9]+")
_PLAIN = re.compile(r"[A-Za-z0-9_.:/-]+")


def slug(value: str) -> str:
    return _SLUG.sub("_", str(value).lower()).strip("_") or "none"


def _pair(key: str, value: str) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):
        return f"{key}={text}"
    return f'{key}="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class L2metRecorder(LineRecorder):
    def __init__(self, source: str | None = None, stream: TextIO | None = None):
        super().__init__(stream)
        self.source = source or os.environ.get("DYNO", "").strip() or "dtconnector"
        self._parts: dict[tuple, tuple[str, str]] = {}

    def line(self, kind: str, name: str, value: float, dims: dict[str, str]) -> str:
        key = (kind, name, tuple(dims.items()))
        parts = self._parts.get(key)
        if parts is None:  # all but the value, built once per metric and dimensions
            full = ".".join([name, *(slug(v) for v in dims.values())])
            unit = "s" if kind == "observe" and name.endswith("_seconds") else ""
            pairs = "".join(" " + _pair(k, v) for k, v in dims.items())
            parts = (f"source={self.source} {_PREFIX[kind]}{full}=", unit + pairs)
            if len(self._parts) < MAX_CACHED_LINES:
                self._parts[key] = parts
        number = f"{value:.6g}" if isinstance(value, float) else str(int(value))
        return parts[0] + number + parts[1]


#: The dyno's recorder: the web and worker processes write through it.
RECORDER = L2metRecorder()
