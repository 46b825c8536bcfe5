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

from core.metrics import LineRecorder

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

    def line(self, kind: str, name: str, value: float, dims: dict[str, str]) -> str:
        full = ".".join([name, *(slug(v) for v in dims.values())])
        number = f"{value:.6g}s" if kind == "observe" and name.endswith("_seconds") else f"{value:g}"
        parts = [f"source={self.source}", f"{_PREFIX[kind]}{full}={number}"]
        parts += [_pair(k, v) for k, v in dims.items()]
        return " ".join(parts)


#: The dyno's recorder: the web and worker processes write through it.
RECORDER = L2metRecorder()
