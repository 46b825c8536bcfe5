"""The connector's metrics, named and defined once for every platform.

Core records what happens through a `Recorder`; each platform passes one that writes its
cloud's native form (CloudWatch EMF lines, l2met lines, structured log fields, Prometheus
text). The default records nothing, so core never depends on how metrics leave a process.

A recorder is called on the ingest path before the answer is sent, so it must be cheap:
no network call, no heavy import, no lock held across I/O. The line recorders here only
format one line and write it to stdout, which every platform's log router already ships.

Names (the same everywhere; dimensions in brackets, all of bounded cardinality, whatever
requests arrive: an ``eventType`` is one of DT's 19 documented types or ``other``
(`event_type_label`), a ``handler`` a name from the handler registry, a ``reason`` one of
core's fixed texts, a ``status`` one of the few codes core answers):

=================================  ===============================================================
``dt_requests_total``              ingest requests answered [status, reason]. ``reason`` is the
                                   answer's fixed reason text (``accepted``, ``duplicate``,
                                   ``token has expired``, ``event store unavailable``, ...)
``dt_ack_latency_seconds``         time from request in to answer out [status]
``dt_enqueue_failures_total``      claims won whose queue write failed (answered 503)
``dt_events_processed_total``      events whose handlers all finished [eventType, or ``other``]
``dt_handler_runs_total``          handler calls [handler, outcome = ok | error]
``dt_retries_total``               deliveries that failed and are left for redelivery
``dt_dead_lettered_total``         deliveries that failed for the last time (dead-lettered)
``dt_stale_state_skipped_total``   state writes skipped: a newer event for the device came first
``dt_end_to_end_lag_seconds``      handlers finished minus the event's timestamp [eventType]
``dt_queue_backlog``               messages waiting, where the queue reports it cheaply (gauge)
=================================  ===============================================================
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable, TextIO

from core.logs import one_line

REQUESTS = "dt_requests_total"
ACK_LATENCY = "dt_ack_latency_seconds"
ENQUEUE_FAILURES = "dt_enqueue_failures_total"
EVENTS_PROCESSED = "dt_events_processed_total"
HANDLER_RUNS = "dt_handler_runs_total"
RETRIES = "dt_retries_total"
DEAD_LETTERED = "dt_dead_lettered_total"
STALE_STATE_SKIPPED = "dt_stale_state_skipped_total"
END_TO_END_LAG = "dt_end_to_end_lag_seconds"
QUEUE_BACKLOG = "dt_queue_backlog"
#: What ``GET /metrics`` answers with (Prometheus text exposition format 0.0.4).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: name -> (kind, unit, help). Kinds: counter (count), histogram (observe), gauge (gauge).
METRICS: dict[str, tuple[str, str, str]] = {
    REQUESTS: ("counter", "Count", "Ingest requests answered, by status and reason."),
    ACK_LATENCY: ("histogram", "Seconds", "Time from an ingest request in to its answer out."),
    ENQUEUE_FAILURES: ("counter", "Count", "Claimed events whose queue write failed (answered 503)."),
    EVENTS_PROCESSED: ("counter", "Count", "Events whose handlers all finished."),
    HANDLER_RUNS: ("counter", "Count", "Handler calls, by handler and outcome."),
    RETRIES: ("counter", "Count", "Deliveries that failed and are left for redelivery."),
    DEAD_LETTERED: ("counter", "Count", "Deliveries that failed for the last time and were dead-lettered."),
    STALE_STATE_SKIPPED: ("counter", "Count", "Device state writes skipped because a newer event came first."),
    END_TO_END_LAG: ("histogram", "Seconds", "Handlers finished minus the event's timestamp."),
    QUEUE_BACKLOG: ("gauge", "Count", "Messages waiting in the work queue."),
}


#: The ``eventType`` label of an event whose type DT does not document: a signed sender
#: could otherwise make one series per type string (each up to the body limit).
OTHER_EVENT_TYPE = "other"
_KNOWN_TYPES: frozenset[str] | None = None


def event_type_label(event_type: str) -> str:
    """`event_type` when it is one of DT's documented types, else ``other``."""
    global _KNOWN_TYPES
    if _KNOWN_TYPES is None:  # imported on first use: the ingest path never needs it
        from .payloads import EVENT_TYPES

        _KNOWN_TYPES = frozenset(EVENT_TYPES)
    return event_type if event_type in _KNOWN_TYPES else OTHER_EVENT_TYPE


class Recorder:
    """Records nothing: the default, and the interface every platform's recorder keeps."""

    def count(self, name: str, value: float = 1, **dims: str) -> None:
        """Add `value` to counter `name` for these dimensions."""

    def observe(self, name: str, value: float, **dims: str) -> None:
        """Record one observation (a latency, a lag) of `name`."""

    def gauge(self, name: str, value: float, **dims: str) -> None:
        """Set gauge `name` (a backlog) to `value`."""


NULL = Recorder()


class EmittingRecorder(Recorder):
    """Sends every record, whatever its kind (``count``, ``observe``, ``gauge``), to `emit`."""

    def emit(self, kind: str, name: str, value: float, dims: dict[str, str]) -> None:
        raise NotImplementedError

    def count(self, name: str, value: float = 1, **dims: str) -> None:
        self.emit("count", name, value, dims)

    def observe(self, name: str, value: float, **dims: str) -> None:
        self.emit("observe", name, value, dims)

    def gauge(self, name: str, value: float, **dims: str) -> None:
        self.emit("gauge", name, value, dims)


class LineRecorder(EmittingRecorder):
    """Writes one text line per record to `stream` (stdout unless set; looked up at each
    write so a host's redirection is honoured). Subclasses say how a record looks."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def line(self, kind: str, name: str, value: float, dims: dict[str, str]) -> str:
        raise NotImplementedError

    def emit(self, kind: str, name: str, value: float, dims: dict[str, str]) -> None:
        text = self.line(kind, name, value, dims)
        try:
            (self.stream or sys.stdout).write(text + "\n")
        except (OSError, ValueError):  # stdout closed or gone: a metric is never worth a failed event
            pass


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: Line recorders cache each (metric, dimensions) line's fixed text. Dimensions are of
#: bounded cardinality; this bounds the cache anyway.
MAX_CACHED_LINES = 4096


class JsonLogRecorder(LineRecorder):
    """One JSON log line per record, the shape log-based metrics read (Google Cloud
    Logging's ``jsonPayload``, IBM Cloud Logs' parsed JSON):

        {"severity":"INFO","message":"metric","metric":"dt_requests_total","kind":"count",
         "value":1,"status":"202","reason":"accepted","time":"..."}
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.time):
        super().__init__(stream)
        self._clock = clock
        self._second = -1
        self._stamp = ""
        self._parts: dict[tuple, tuple[str, str]] = {}

    def line(self, kind: str, name: str, value: float, dims: dict[str, str]) -> str:
        now = int(self._clock())
        if now != self._second:  # strftime once per second, not per line
            self._second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        key = (kind, name, tuple(dims.items()))
        parts = self._parts.get(key)
        if parts is None:  # all but the value and time, built once per metric and dimensions
            head = one_line(_ENCODER.encode({"severity": "INFO", "message": "metric", "metric": name, "kind": kind}))
            tail = one_line(_ENCODER.encode(dims))[1:-1]  # a line separator in a label never splits the line
            parts = (head[:-1] + ',"value":', ("," + tail if tail else "") + ',"time":"')
            if len(self._parts) < MAX_CACHED_LINES:
                self._parts[key] = parts
        return parts[0] + _number(value) + parts[1] + self._stamp + '"}'


def _number(value: float) -> str:
    """A JSON number (values are counts, seconds and depths: always finite)."""
    return repr(value) if isinstance(value, float) else str(int(value))
