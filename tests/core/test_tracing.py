"""Opt-in tracing: off, OpenTelemetry is never imported; on, the worker's span is a child
of the ingest span, through the trace context carried inside the queued message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.tracing import PREFIX, split_message
from tests.dt import event_body

ROOT = Path(__file__).resolve().parents[2]

_SCENARIO = """
import json, sys
from core import on
from core.config import Settings
from local_receiver.app import LocalApp
from core.http import Headers, Request
from tests.dt import event_body, signed, BASE_ENV
{setup}
seen = []
on("*")(lambda event: seen.append(event.raw))
app = LocalApp(sys.argv[1], Settings.from_env(BASE_ENV), retry_base_s=0.0)
body = event_body()
status = app.receiver.handle(Request("POST", body, Headers(signed(body)))).status
queued = app.db._conn.execute("SELECT body FROM queue").fetchone()[0]
app.runner.drain()
out = {{"status": status, "queued": queued, "raw_ok": seen == [json.loads(body)],
       "otel_imported": any(m == "opentelemetry" or m.startswith("opentelemetry.") for m in sys.modules)}}
{report}
print(json.dumps(out))
"""

_SDK = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
"""

_SPANS = """
out["spans"] = [
    {"name": s.name, "trace": s.context.trace_id, "id": s.context.span_id,
     "parent": s.parent.span_id if s.parent else None}
    for s in exporter.get_finished_spans()
]
"""


def _run(tmp_path, env: dict, setup: str = "", report: str = "") -> dict:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("DT_")}, "PYTHONPATH": str(ROOT), **env}
    script = _SCENARIO.format(setup=setup, report=report)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "t.db")], env=full, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_dt_otel_opentelemetry_is_never_imported(tmp_path):
    out = _run(tmp_path, {})
    assert out["status"] == 202 and out["raw_ok"]
    assert not out["otel_imported"]
    assert not out["queued"].startswith(PREFIX)


def test_with_dt_otel_the_worker_span_continues_the_ingest_trace(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    out = _run(tmp_path, {"DT_OTEL": "1"}, setup=_SDK, report=_SPANS)
    assert out["status"] == 202
    assert out["raw_ok"]  # handlers see DT's body, without the carried context
    assert out["queued"].startswith(PREFIX)
    spans = {s["name"]: s for s in out["spans"]}
    ingest, process = spans["dtconnector.ingest"], spans["dtconnector.process"]
    assert process["trace"] == ingest["trace"]
    assert process["parent"] == ingest["id"]
    assert f'{ingest["trace"]:032x}' in out["queued"]


def test_carried_context_is_removed_exactly():
    body = event_body().decode()
    carried = PREFIX + "00-" + "a" * 32 + "-" + "b" * 16 + '-01",' + body[1:]
    assert split_message(carried) == (body, "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert split_message(carried.encode()) == (body.encode(), "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert split_message(body) == (body, None)  # queued before tracing: unchanged
    forged = PREFIX + 'x", ' + body[1:]  # not a traceparent: left for the parser to judge
    assert split_message(forged) == (forged, None)
