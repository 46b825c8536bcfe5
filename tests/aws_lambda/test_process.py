"""`process` consumes SQS batches and names only the failed records."""

from __future__ import annotations

import json

from core import on
import aws_lambda.handler as handler
from tests.dt import event_body, event_id_of, signed
from tests.platforms.aws import function_url_event, sqs_event


def _record(message_id: str, body: str, receive_count: int = 1) -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1795341600000"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
        "awsRegion": "us-east-1",
    }


def test_only_failed_records_are_reported(harness):
    handled = []

    @on("*")
    def picky(event):
        if event.device_id == "bad":
            raise RuntimeError("cannot handle")
        handled.append(event.event_id)

    good, bad, good2 = event_body(device="ok"), event_body(device="bad"), event_body(device="ok2")
    event = {
        "Records": [
            _record("m-good", good.decode()),
            _record("m-bad", bad.decode()),
            _record("m-poison", "this is not a DT event"),
            _record("m-good2", good2.decode()),
        ]
    }
    reply = handler.process(event, None)
    assert reply == {"batchItemFailures": [{"itemIdentifier": "m-bad"}, {"itemIdentifier": "m-poison"}]}
    assert handled == [event_id_of(good), event_id_of(good2)]
    assert set(harness.device_state("ok")) == {"temperature"}


def test_all_good_batch_reports_no_failures(harness):
    body = event_body()
    assert handler.process({"Records": [_record("m1", body.decode())]}, None) == {"batchItemFailures": []}
    # A redelivery of a processed record is acknowledged (idempotent), not failed.
    assert handler.process({"Records": [_record("m1", body.decode(), 2)]}, None) == {"batchItemFailures": []}


def test_empty_or_foreign_event_reports_nothing(harness):
    assert handler.process({"Records": []}, None) == {"batchItemFailures": []}
    assert handler.process({}, None) == {"batchItemFailures": []}


def test_state_store_failure_fails_the_record(harness):
    body = event_body(device="d1")
    with harness.broken("state"):
        reply = handler.process({"Records": [_record("m1", body.decode())]}, None)
    assert reply == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_worker_that_cannot_start_fails_the_whole_batch(make_harness):
    harness = make_harness(DT_HANDLERS="no_such_module_for_dtconnector_tests")
    body = event_body()
    reply = handler.process({"Records": [_record("a", body.decode()), _record("b", body.decode())]}, None)
    assert reply == {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}
    assert harness.queue_depth() == 0


def test_end_to_end_event_shape_from_a_real_receive(harness):
    seen = []

    @on("temperature")
    def record(event):
        seen.append(event.data.value)

    body = event_body()
    assert handler.ingest(function_url_event(body, signed(body)), None)["statusCode"] == 202
    batch = harness.sqs.receive_message(
        QueueUrl=harness.queue_url, AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    event = sqs_event(batch, harness.queue_arn)
    assert event["Records"][0]["messageAttributes"]["eventId"]["stringValue"] == event_id_of(body)
    assert handler.process(event, None) == {"batchItemFailures": []}
    assert seen == [21.5]


def test_dead_lettered_message_keeps_its_body_and_event_id(harness):
    @on("*")
    def broken(event):
        raise ValueError("always")

    body = event_body()
    assert handler.ingest(function_url_event(body, signed(body)), None)["statusCode"] == 202
    harness.drain()
    [dead] = harness.dead_letter_messages()
    assert json.loads(dead["Body"]) == json.loads(body)
    assert dead["MessageAttributes"]["eventId"]["StringValue"] == event_id_of(body)
    assert harness.queue_depth() == 0
