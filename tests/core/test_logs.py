"""`core.logs`: one JSON object per line, whatever the logged text contains.

A log shipper splits on line breaks; Python's `str.splitlines` (and many a reader) breaks on
more than ``\\n``. A message or field carrying any of them must still be one line that
decodes back to exactly what was logged."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core import logs

#: Every character `str.splitlines` breaks on (and CRLF).
SEPARATORS = {
    "LF": "\n", "CR": "\r", "CRLF": "\r\n", "VT": "\x0b", "FF": "\x0c", "FS": "\x1c", "GS": "\x1d",
    "RS": "\x1e", "NEL": "\x85", "LS": "\u2028", "PS": "\u2029",
}


def test_the_list_is_every_separator_python_knows():
    breaks = {chr(c) for c in range(0x110000) if len(("a" + chr(c) + "b").splitlines()) == 2}
    assert breaks == {s for s in SEPARATORS.values() if len(s) == 1}


@pytest.fixture
def lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logs.log.addHandler(handler)
    level = logs.log.level
    logs.log.setLevel(logging.INFO)  # not `.level =`: that keeps the logger's cached verdicts
    yield stream
    logs.log.removeHandler(handler)
    logs.log.setLevel(level)


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=list(SEPARATORS))
def test_a_separator_in_the_message_stays_on_one_line(lines, separator):
    text = f"before{separator}after"
    logs.event_log(logging.INFO, text)
    [line] = lines.getvalue().splitlines()
    assert json.loads(line)["message"] == text


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=list(SEPARATORS))
def test_a_separator_in_a_field_stays_on_one_line(lines, separator):
    value = f"{separator}eventId{separator}"
    logs.event_log(logging.WARNING, "rejected body", reason=value, nested={"k": [value]})
    [line] = lines.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["reason"] == value and entry["nested"] == {"k": [value]}


def test_other_text_is_written_as_it_is(lines):
    logs.event_log(logging.INFO, "température ✓ 温度")
    assert "température ✓ 温度" in lines.getvalue()  # not \\u-escaped: only separators are


@pytest.mark.parametrize("name", sorted(SEPARATORS))
def test_every_metric_line_recorder_writes_exactly_one_line_whatever_a_label_holds(name):
    """The line recorders (Cloud Logging/IBM JSON, CloudWatch EMF, Azure host log) build
    their text themselves; a label carrying a separator must not split a metric in two."""
    from aws_lambda.metrics import EmfRecorder
    from azure_trigger.metrics import HostLogRecorder
    from core.metrics import HANDLER_RUNS, JsonLogRecorder

    label = f"handler{SEPARATORS[name]}x"
    for recorder in (JsonLogRecorder(stream=io.StringIO()), EmfRecorder(stream=io.StringIO())):
        recorder.count(HANDLER_RUNS, handler=label, outcome="ok")
        text = recorder.stream.getvalue()
        assert len(text.splitlines()) == 1, (type(recorder).__name__, text)
        assert json.loads(text)["handler"] == label
    messages: list[str] = []
    logger = logging.getLogger(f"test-metric-lines-{name}")
    logger.propagate = False
    logger.addHandler(_Keep(messages))
    HostLogRecorder(logger).count(HANDLER_RUNS, handler=label, outcome="ok")
    assert len(messages) == 1 and len(messages[0].splitlines()) == 1
    assert json.loads(messages[0])["handler"] == label


class _Keep(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())
