"""The SAM template's alarms watch metrics the functions really emit: the EMF metric
names and the rolled-up dimension sets EmfRecorder writes, and the DLQ's own depth."""

from __future__ import annotations

import io
import json

import pytest

from aws_lambda.metrics import EmfRecorder
from core.metrics import HANDLER_RUNS, REQUESTS
from tests.aws_lambda.cfn_lint import described, findings

from .test_template import TEMPLATE, props

#: One worker runs every cfn-lint test, so cfn-lint runs once (tests/aws_lambda/cfn_lint.py).
pytestmark = pytest.mark.xdist_group("cfn-lint")


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    doc, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return doc


def _emf_dimension_sets(name: str, **dims: str) -> list[list[str]]:
    out = io.StringIO()
    EmfRecorder(namespace="dtconnector", stream=out).count(name, **dims)
    return json.loads(out.getvalue())["_aws"]["CloudWatchMetrics"][0]["Dimensions"]


def _stat(alarm: dict, metric_name: str) -> dict:
    [query] = [m for m in alarm["Metrics"] if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"] == metric_name]
    return query["MetricStat"]


def test_alarms_lint_clean():
    alarms = [m for m in findings("template") if "Alarm" in str(m["Location"]["Path"])]
    assert alarms == [], described(alarms)


def test_dead_letter_alarm_fires_on_any_message_in_the_dlq(template):
    alarm = props(template, "DeadLetterAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


@pytest.mark.parametrize(
    "alarm_name, metric, dims",
    [("Ingest5xxAlarm", REQUESTS, {"status": "503", "reason": "event queue unavailable"}),
     ("WorkerErrorsAlarm", HANDLER_RUNS, {"outcome": "error", "handler": "handlers.record"})],
)
def test_metric_alarms_watch_a_dimension_set_the_functions_emit(template, alarm_name, metric, dims):
    stat = _stat(props(template, alarm_name), metric)
    assert stat["Metric"]["Namespace"] == {"Ref": "MetricsNamespace"}
    watched = [d["Name"] for d in stat["Metric"]["Dimensions"]]
    assert watched in _emf_dimension_sets(metric, **dims)
    assert [d["Value"] for d in stat["Metric"]["Dimensions"]] == [dims[watched[0]]]
    assert stat["Stat"] == "Sum"


def test_alarms_notify_the_optional_topic(template):
    for name in ("DeadLetterAlarm", "Ingest5xxAlarm", "WorkerErrorsAlarm"):
        alarm = props(template, name)
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_functions_get_the_metrics_namespace(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["DT_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
