"""Metrics as structured log lines: Cloud Run functions parse a JSON line on stdout into
``jsonPayload``, and the log-based metrics `deploy.sh` creates count and extract from it
(``jsonPayload.metric``, ``jsonPayload.value``, labels from ``jsonPayload.status``, ...).
No Cloud Monitoring API call on the request path."""

from __future__ import annotations

from core.metrics import JsonLogRecorder

#: The container's recorder: ingest and worker write through it.
RECORDER = JsonLogRecorder()
