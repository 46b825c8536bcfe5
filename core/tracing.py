"""Opt-in OpenTelemetry tracing: a span per ingest request and per worker run, the worker's
span a child of the ingest span that queued the event.

On only with ``DT_OTEL=1`` and the ``opentelemetry-api`` package installed; otherwise this
module imports nothing from OpenTelemetry, so cold start and the request path are as
without it. Which exporter the spans go to is the deployment's choice, configured the
usual OpenTelemetry way (e.g. ``opentelemetry-instrument`` or the platform's distro).

The trace context travels inside the queued message, as a first member the worker
removes before parsing, so the queued text after it is the exact body DT sent:

    {"_dtTrace":"00-<trace id>-<span id>-<flags>", ...DT's body from its second byte...}

Every worker strips that member whether tracing is on or not, and a message without it
(queued before tracing was turned on) is processed as always.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Mapping

PREFIX = '{"_dtTrace":"'
_PREFIX_BYTES = PREFIX.encode()
_CARRIED = re.compile(r'\{"_dtTrace":"([0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})",')
_CARRIED_BYTES = re.compile(_CARRIED.pattern.encode())


def split_message(message: str | bytes) -> tuple[str | bytes, str | None]:
    """(the queued body without the trace member, its traceparent or None). Cheap: a
    `startswith` for messages without one."""
    if isinstance(message, str):
        if message.startswith(PREFIX):
            match = _CARRIED.match(message)
            if match:
                return "{" + message[match.end():], match.group(1)
        return message, None
    if message.startswith(_PREFIX_BYTES):
        match = _CARRIED_BYTES.match(message)
        if match:
            return b"{" + message[match.end():], match.group(1).decode()
    return message, None


def enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("DT_OTEL", "").strip() != "1":
        return False
    import importlib.util

    return importlib.util.find_spec("opentelemetry") is not None


class Tracing:
    """Spans through the OpenTelemetry API (imported here, only when tracing is on)."""

    def __init__(self) -> None:
        from opentelemetry import propagate, trace

        self._tracer = trace.get_tracer("dtconnector")
        self._propagate = propagate

    @contextlib.contextmanager
    def ingest(self) -> Iterator[object]:
        with self._tracer.start_as_current_span("dtconnector.ingest", kind=_kind("SERVER")) as span:
            yield span

    def carry(self, text: str) -> str:
        """`text` with the current span's context as its first member (see module doc)."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        parent = carrier.get("traceparent")
        if not parent or not text.startswith("{") or not _CARRIED.match(f'{PREFIX}{parent}",'):
            return text
        rest = text[1:].lstrip()
        if rest.startswith("}"):  # an empty object is no DT event: nothing to carry
            return text
        return f'{PREFIX}{parent}",' + rest

    @contextlib.contextmanager
    def process(self, traceparent: str | None) -> Iterator[object]:
        context = self._propagate.extract({"traceparent": traceparent}) if traceparent else None
        with self._tracer.start_as_current_span("dtconnector.process", context=context, kind=_kind("CONSUMER")) as span:
            yield span


def _kind(name: str):
    from opentelemetry.trace import SpanKind

    return getattr(SpanKind, name)


def from_env(env: Mapping[str, str] | None = None) -> Tracing | None:
    return Tracing() if enabled(env) else None
