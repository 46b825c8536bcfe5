"""Metrics through the Functions host's logging, which forwards Python log records to
Application Insights as traces. Each record's message is one JSON object (query it with
``parse_json(message)``) and the same fields ride in ``custom_dimensions``, which the
Azure Monitor exporters (OpenCensus, azure-monitor-opentelemetry) publish as
``customDimensions``. No SDK import, no network call of ours.

The logger is not under ``dtconnector`` (whose JSON handler stops propagation): its
records reach the root logger, where the host's handler is.
"""

from __future__ import annotations

import json
import logging

from core.logs import one_line
from core.metrics import EmittingRecorder

LOGGER_NAME = "dtconnector_metrics"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class HostLogRecorder(EmittingRecorder):
    def __init__(self, logger: logging.Logger | None = None):
        self.log = logger or logging.getLogger(LOGGER_NAME)
        if self.log.level == logging.NOTSET:
            self.log.setLevel(logging.INFO)  # not filtered out by the root logger's level

    def emit(self, kind: str, name: str, value: float, dims: dict[str, str]) -> None:
        log = self.log
        if log.isEnabledFor(logging.INFO):
            fields = {"metric": name, "kind": kind, "value": value, **dims}
            record = logging.LogRecord(log.name, logging.INFO, "(dtconnector)", 0, one_line(_ENCODER.encode(fields)), None, None)
            record.custom_dimensions = fields
            log.handle(record)


#: The container's recorder: ingest and worker write through it.
RECORDER = HostLogRecorder()
