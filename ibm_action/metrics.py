"""Metrics as structured log lines on stdout, which IBM Cloud Logs parses as JSON
(filter and chart on ``metric``, ``value``, ``status``, ``reason``). No network call."""

from __future__ import annotations

from core.metrics import JsonLogRecorder

#: The container's recorder: ingest and worker write through it.
RECORDER = JsonLogRecorder()
