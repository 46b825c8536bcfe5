"""AWS in direct mode on moto: DT's AWS_SQS connector publishes into the SQS queue itself.

The same tables, queues and worker entry point (`aws_lambda.handler.process`) as
tests/platforms/aws.py, with ``DT_DELIVERY=direct``. `deliver()` plays DT: it sends the
body straight to the queue with SQS SendMessage (no ingest, no signature), alternating
the shapes the decoder accepts (plain JSON, base64, the bare event object), since DT's
real format is unpublished. Every other scenario skips there (tests/conftest.py, DIRECT_MODE_MODULES).
"""

from __future__ import annotations

import base64
import itertools
import json

from core.direct import decode_direct_message

from .aws import AwsHarness, AwsStandIn
from .base import Reply


def dt_shapes(body: bytes):
    """The shapes `deliver()` cycles through: the push body as text, base64 of it, and the
    bare event object as text."""
    yield body.decode("utf-8")
    yield base64.b64encode(body).decode("ascii")
    yield json.dumps(json.loads(body)["event"])


class AwsDirectHarness(AwsHarness):
    def __init__(self, stand_in, n, env):
        super().__init__(stand_in, n, {**env, "DT_DELIVERY": "direct"})
        self._shape = itertools.cycle(range(3))

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        message = list(dt_shapes(body))[next(self._shape)]
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=message)
        return Reply(202)

    def inject_message(self, message: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=message)

    def raw_dead_letters(self) -> list[str]:
        """Every dead-lettered message as DT (or anyone) published it."""
        return [m["Body"] for m in self.dead_letter_messages()]

    def dead_letters(self) -> list[str]:
        return [json.loads(decode_direct_message(m))["event"]["eventId"] for m in self.raw_dead_letters()]


class AwsDirectStandIn(AwsStandIn):
    name = "aws_direct"
    direct = True

    def harness(self, env):
        return AwsDirectHarness(self, next(self._counter), env)


STAND_IN = AwsDirectStandIn()
