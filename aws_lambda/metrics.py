"""CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout: Lambda ships stdout
to CloudWatch Logs, which turns each EMF line into metric values. No SDK, no network call,
nothing added to the ack but formatting one line.

Namespace: ``DT_METRICS_NAMESPACE`` (default ``dtconnector``). A metric with dimensions is
published per full dimension set and rolled up by its first dimension (``status`` for
requests, ``outcome`` for handler runs), which is what the SAM template's alarms watch.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, TextIO

from core.logs import one_line
from core.metrics import METRICS, LineRecorder

DEFAULT_NAMESPACE = "dtconnector"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_MAX_CACHED = 4096


class EmfRecorder(LineRecorder):
    def __init__(
        self, namespace: str | None = None, stream: TextIO | None = None, clock: Callable[[], float] = time.time
    ):
        super().__init__(stream)
        self.namespace = namespace or os.environ.get("DT_METRICS_NAMESPACE", "").strip() or DEFAULT_NAMESPACE
        self._clock = clock
        self._parts: dict[tuple, tuple[str, str]] = {}

    def line(self, kind: str, name: str, value: float, dims: dict[str, str]) -> str:
        key = (name, tuple(dims.items()))
        parts = self._parts.get(key)
        if parts is None:  # all but the timestamp and value, built once per metric and dimensions
            keys = list(dims)
            sets = [keys, keys[:1]] if len(keys) > 1 else [keys]
            unit = METRICS.get(name, ("", "None", ""))[1]
            directive = {"Namespace": self.namespace, "Dimensions": sets, "Metrics": [{"Name": name, "Unit": unit}]}
            # one_line: a line separator in a name or label never splits the EMF document
            head = one_line('"CloudWatchMetrics":[' + _ENCODER.encode(directive) + "]}," + _ENCODER.encode(name) + ":")
            tail = one_line(("," + _ENCODER.encode(dims)[1:-1] if dims else "") + "}")
            if len(self._parts) < _MAX_CACHED:  # dimensions are bounded; this bounds it anyway
                self._parts[key] = parts = (head, tail)
            else:
                parts = (head, tail)
        number = repr(value) if isinstance(value, float) else str(int(value))
        return '{"_aws":{"Timestamp":' + str(int(self._clock() * 1000)) + "," + parts[0] + number + parts[1]


#: The container's recorder: ingest and worker write through it.
RECORDER = EmfRecorder()
