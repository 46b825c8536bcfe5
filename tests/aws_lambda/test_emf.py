"""EmfRecorder's lines against the Embedded Metric Format specification's structure."""

from __future__ import annotations

import copy
import io
import json

import pytest

from aws_lambda.metrics import EmfRecorder
from core.metrics import ACK_LATENCY, QUEUE_BACKLOG, REQUESTS, RETRIES
from tests.metrics_native import key, parse_emf, validate_emf


def _lines(recorder: EmfRecorder) -> list[dict]:
    return [json.loads(line) for line in recorder.stream.getvalue().splitlines()]


def test_every_kind_of_record_is_a_valid_emf_line_with_units():
    recorder = EmfRecorder(namespace="dt-test", stream=io.StringIO(), clock=lambda: 1_795_000_000.25)
    recorder.count(REQUESTS, status="401", reason='token "x" has expired')
    recorder.observe(ACK_LATENCY, 0.0042, status="202")
    recorder.count(RETRIES)
    recorder.gauge(QUEUE_BACKLOG, 7)
    lines = _lines(recorder)
    for entry in lines:
        validate_emf(entry)
        assert entry["_aws"]["Timestamp"] == 1_795_000_000_250
        assert entry["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "dt-test"
    units = [e["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] for e in lines]
    assert units == ["Count", "Seconds", "Count", "Count"]
    assert lines[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["status", "reason"], ["status"]]
    assert lines[0]["reason"] == 'token "x" has expired'
    assert parse_emf(recorder.stream.getvalue().splitlines())[key(REQUESTS, status="401", reason='token "x" has expired')] == 1


def test_namespace_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DT_METRICS_NAMESPACE", "my-space")
    assert EmfRecorder(stream=io.StringIO()).namespace == "my-space"
    monkeypatch.delenv("DT_METRICS_NAMESPACE")
    assert EmfRecorder(stream=io.StringIO()).namespace == "dtconnector"


@pytest.mark.parametrize(
    "breaks",
    [
        lambda e: e.pop(REQUESTS),  # the value is missing
        lambda e: e.__setitem__("status", 401),  # a dimension value that is not a string
        lambda e: e["_aws"].pop("Timestamp"),
        lambda e: e["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].__setitem__("Unit", "Requests"),
        lambda e: e["_aws"]["CloudWatchMetrics"][0].pop("Namespace"),
    ],
)
def test_the_validator_refuses_what_the_specification_refuses(breaks):
    recorder = EmfRecorder(namespace="n", stream=io.StringIO())
    recorder.count(REQUESTS, status="202", reason="accepted")
    [entry] = _lines(recorder)
    validate_emf(copy.deepcopy(entry))
    breaks(entry)
    with pytest.raises((AssertionError, KeyError)):
        validate_emf(entry)
