"""AWS Lambda on moto's in-process `mock_aws`: DynamoDB, SQS (with a redrive policy to a
dead-letter queue) and Secrets Manager, driven through the real Lambda entry points.

Each harness gets its own tables and queues. The work queue's VisibilityTimeout is 0 so
`drain()` sees a failed record again at once; its RedrivePolicy (maxReceiveCount =
`max_attempts`) makes moto move a record to the DLQ on the receive after its last
attempt, as SQS does. `drain()` plays the Lambda SQS event source: it receives batches,
builds the event Lambda would, calls `process()`, and deletes the records that the
reply's `batchItemFailures` does not name.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import itertools
import json
import os
import threading
import time
from typing import Mapping
from unittest import mock
from urllib.parse import parse_qs

import pytest

from .base import Harness, Reply, StandIn

REGION = "us-east-1"
ACCOUNT = "123456789012"
#: What the stand-in itself needs in the environment (moto also sets fake credentials).
AWS_ENV = {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
_TEXT_TYPES = ("application/json", "text/")


def function_url_event(body: bytes, headers, method: str = "POST", path: str = "/") -> dict:
    """The event a Lambda Function URL (payload 2.0) delivers: lower-cased header names,
    repeated headers comma-joined, a text body as a string, anything else base64, the
    query string raw and parsed."""
    path, _, query = path.partition("?")
    joined: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else str(value)
    content_type = joined.get("content-type", "")
    try:
        text = body.decode("utf-8") if content_type.startswith(_TEXT_TYPES) else None
    except UnicodeDecodeError:
        text = None
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghijklmnop",
            "domainName": "abcdefghijklmnop.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghijklmnop",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "dt"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795341600000,
        },
        "isBase64Encoded": text is None,
    }
    if query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body:
        event["body"] = text if text is not None else base64.b64encode(body).decode("ascii")
    return event


def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    """The event the Lambda SQS event source delivers for a received batch."""
    records = []
    for m in messages:
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": {
                    name: {
                        "stringValue": attr.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": attr["DataType"],
                    }
                    for name, attr in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def _serialised(call):
    """Makes moto's in-process backend handle one request at a time, as real DynamoDB
    applies a conditional write to an item atomically (moto checks, then writes, with no
    lock, so concurrent conditional writes could both pass)."""
    lock = threading.RLock()

    def serialised(self, *args, **kwargs):
        with lock:
            return call(self, *args, **kwargs)

    return serialised


@functools.lru_cache(maxsize=None)
def _data_loader():
    from botocore.loaders import create_loader

    return create_loader()


def _shared_data_loader(session) -> None:
    """Every botocore session reads botocore's data files (endpoints, service models:
    several MB of JSON) through one loader, which caches them: a Lambda container does
    that once per cold start, and the tests start a cold container per harness (without
    this, parsing that JSON again was half the AWS suite's time). The data is read-only,
    so sharing it changes nothing the entry points do."""
    session._components.register_component("data_loader", _data_loader())


def _unix_time(dt=None) -> float:
    """moto's SQS clock, without its cost. moto works out "now" through three datetime
    objects, and does so for every message in the queue on every send, receive and
    attribute read (each counts the visible, delayed and in-flight messages), and for
    every message a receive looks at (its retention check reads all the attributes
    again). With a few hundred events queued that was most of the load test's time.
    time.time() is the same instant (and a fake clock moves it the same way)."""
    from moto.core.utils import unix_time

    return time.time() if dt is None else unix_time(dt)


def _unix_time_millis(dt=None) -> float:
    return _unix_time(dt) * 1000.0


def _retained(backend, queue_name: str, message) -> bool:
    """moto's retention check (is `message` younger than its queue's
    MessageRetentionPeriod?), reading that one setting instead of every attribute."""
    period_s = int(backend.get_queue(queue_name).message_retention_period)
    return period_s + message.sent_timestamp / 1000 > _unix_time()


class AwsHarness(Harness):
    _active: "AwsHarness | None" = None
    _activate_lock = threading.RLock()

    def __init__(self, stand_in: "AwsStandIn", n: int, env: Mapping[str, str]):
        from aws_lambda.dynamodb import DynamoClaimStore, DynamoStateStore
        from aws_lambda.sqs import SqsEventQueue

        self.stand_in = stand_in
        prefix = f"dt{n}-{os.getpid()}"
        self.dedup_table, self.state_table = f"{prefix}-dedup", f"{prefix}-state"
        sqs, ddb = stand_in.client("sqs"), stand_in.client("dynamodb")
        self.sqs, self.dynamodb = sqs, ddb
        ddb.create_table(
            TableName=self.dedup_table,
            KeySchema=[{"AttributeName": "eventId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "eventId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.update_time_to_live(
            TableName=self.dedup_table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"}
        )
        ddb.create_table(
            TableName=self.state_table,
            KeySchema=[
                {"AttributeName": "deviceId", "KeyType": "HASH"},
                {"AttributeName": "eventType", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "deviceId", "AttributeType": "S"},
                {"AttributeName": "eventType", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        # 14 days, as template.yaml's DeadLetterQueue (moto drops older messages, like SQS).
        self.dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq", Attributes={"MessageRetentionPeriod": "1209600"})[
            "QueueUrl"
        ]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_attempts)}
        self.queue_url = sqs.create_queue(
            QueueName=f"{prefix}-events",
            Attributes={"VisibilityTimeout": "0", "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.env = {
            **{k: v for k, v in env.items() if v is not None},
            "DT_DEDUP_TABLE": self.dedup_table,
            "DT_STATE_TABLE": self.state_table,
            "DT_QUEUE_URL": self.queue_url,
            "DT_MAX_ATTEMPTS": str(self.max_attempts),
        }
        self.claim_store = DynamoClaimStore(ddb, self.dedup_table)
        self.state_store = DynamoStateStore(ddb, self.state_table)
        self.queue = SqsEventQueue(sqs, self.queue_url)
        self.stdout = io.StringIO()  # what Lambda would ship to CloudWatch Logs
        self._activate()

    # The entry points read os.environ and cache per container: give them this harness's
    # env, as a fresh container would see it, whenever another harness was used last.
    def _activate(self) -> None:
        import aws_lambda.handler as handler

        with AwsHarness._activate_lock:
            if AwsHarness._active is self:
                return
            for key in [k for k in os.environ if k.startswith("DT_")]:
                del os.environ[key]
            os.environ.update(self.env)
            handler.reset()
            from aws_lambda.metrics import RECORDER

            RECORDER.stream = self.stdout
            AwsHarness._active = self

    def new_container(self) -> None:
        import aws_lambda.handler as handler

        self._activate()
        handler.reset()

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        import aws_lambda.handler as handler

        self._activate()
        reply = handler.ingest(function_url_event(body, headers, method, path), None)
        return Reply(reply["statusCode"], reply.get("body", ""), dict(reply.get("headers", {})))

    def drain(self) -> None:
        import aws_lambda.handler as handler

        self._activate()
        for _ in range(1000):
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                if self.queue_depth() == 0:
                    return
                continue
            reply = handler.process(sqs_event(batch, self.queue_arn), None)
            failed = {f["itemIdentifier"] for f in reply["batchItemFailures"]}
            done = [m for m in batch if m["MessageId"] not in failed]
            if done:
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
        raise AssertionError("drain(): the queue never emptied")

    def inject_message(self, message: str) -> None:
        self.queue.enqueue(message, event_id=json.loads(message)["event"]["eventId"])

    def _depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def queue_depth(self) -> int:
        return self._depth(self.queue_url)

    def dead_letter_messages(self) -> list[dict]:
        """Every DLQ message, read without consuming it (hidden while read, then shown)."""
        messages: list[dict] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        for m in messages:
            self.sqs.change_message_visibility(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        return messages

    def dead_letters(self) -> list[str]:
        ids = []
        for m in self.dead_letter_messages():
            attr = m.get("MessageAttributes", {}).get("eventId")
            ids.append(attr["StringValue"] if attr else json.loads(m["Body"])["event"]["eventId"])
        return ids

    def requeue_dead_letters(self) -> int:
        """What a redrive (``aws sqs start-message-move-task``, which moto lacks) does: each
        DLQ message sent back to the work queue with its attributes, then deleted."""
        moved = 0
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return moved
            for m in batch:
                attributes = {
                    name: {"DataType": a["DataType"], "StringValue": a["StringValue"]}
                    for name, a in m.get("MessageAttributes", {}).items()
                    if "StringValue" in a
                }
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=m["Body"], MessageAttributes=attributes)
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])
                moved += 1

    def native_expiry(self, key: str) -> float | None:
        item = self.dynamodb.get_item(TableName=self.dedup_table, Key={"eventId": {"S": key}}, ConsistentRead=True)
        return float(item["Item"]["expiresAt"]["N"]) if "Item" in item else None

    def metrics(self):
        from tests.metrics_native import parse_emf

        return parse_emf(self.stdout.getvalue().splitlines())

    @contextlib.contextmanager
    def broken(self, part: str):
        """Every call on that part's table or queue fails as botocore fails when the
        endpoint cannot be reached (EndpointConnectionError, raised before sending)."""
        from botocore.client import BaseClient
        from botocore.exceptions import EndpointConnectionError

        target = {"claims": self.dedup_table, "state": self.state_table, "queue": self.queue_url}[part]
        real = BaseClient._make_api_call

        def failing(client, operation_name, api_params):
            if target in (api_params.get("TableName"), api_params.get("QueueUrl")) and (
                part != "queue" or operation_name.startswith("SendMessage")
            ):
                raise EndpointConnectionError(endpoint_url=client.meta.endpoint_url)
            return real(client, operation_name, api_params)

        with mock.patch.object(BaseClient, "_make_api_call", failing):
            yield

    # -- bounded storage: DynamoDB's TTL (moto never deletes expired items) ----------------
    ttl_never_fires = True

    def _items(self, table: str) -> list[dict]:
        pages = self.dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        return [item for page in pages for item in page["Items"]]

    def stored_records(self) -> dict[str, int]:
        return {"events": len(self._items(self.dedup_table)), "state": len(self._items(self.state_table))}

    def record_expiries(self) -> list[float]:
        ttl = self.dynamodb.describe_time_to_live(TableName=self.dedup_table)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiresAt"}, ttl
        return [float(item["expiresAt"]["N"]) for item in self._items(self.dedup_table)]

    def close(self) -> None:
        import aws_lambda.handler as handler

        with AwsHarness._activate_lock:
            if AwsHarness._active is self:
                from aws_lambda.metrics import RECORDER

                RECORDER.stream = None
                handler.reset()
                for key in self.env:
                    os.environ.pop(key, None)
                AwsHarness._active = None
        with contextlib.suppress(Exception):
            for table in (self.dedup_table, self.state_table):
                self.dynamodb.delete_table(TableName=table)
            for url in (self.queue_url, self.dlq_url):
                self.sqs.delete_queue(QueueUrl=url)


class AwsStandIn(StandIn):
    """moto's `mock_aws` in this process. It patches botocore for everyone, so it is
    active only while a test uses it (`pause` stops it); a restart is cheap."""

    name = "aws"

    def start(self) -> None:
        try:
            import boto3  # noqa: F401
            import moto  # noqa: F401
        except ImportError as exc:  # pragma: no cover - the test extras install both
            pytest.skip(f"moto/boto3 not installed ({exc.name}): pip install -e '.[aws,test]'")
        self.resume()

    def resume(self) -> None:
        from botocore import session as botocore_session
        from moto import mock_aws
        from moto.core import botocore_stubber
        from moto.sqs import models as sqs_models

        self._saved_env = {k: os.environ.get(k) for k in AWS_ENV}
        os.environ.update(AWS_ENV)
        self._patches = [
            mock_aws(),
            mock.patch.object(
                botocore_stubber.BotocoreStubber, "__call__", _serialised(botocore_stubber.BotocoreStubber.__call__)
            ),
            mock.patch.object(botocore_session.Session, "_register_data_loader", _shared_data_loader),
            mock.patch.multiple(sqs_models, unix_time=_unix_time, unix_time_millis=_unix_time_millis),
            mock.patch.object(sqs_models.SQSBackend, "is_message_valid_based_on_retention_period", _retained),
        ]
        for patch in self._patches:
            patch.start()
        self._counter = itertools.count(1)
        self._clients: dict[str, object] = {}

    def client(self, service: str):
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.session.Session().client(service, region_name=REGION)
        return self._clients[service]

    def pause(self) -> None:
        import aws_lambda.handler as handler

        handler.reset()
        for patch in reversed(self._patches):
            patch.stop()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def stop(self) -> None:
        """Nothing runs: `pause` already stopped moto."""

    def harness(self, env: Mapping[str, str]) -> Harness:
        return AwsHarness(self, next(self._counter), env)


STAND_IN = AwsStandIn()
