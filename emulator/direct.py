"""`dtconnector send --to sqs://…|pubsub://…`: publish DT-shaped messages straight into a
queue, as a native DT Data Connector (AWS_SQS, GOOGLE_CLOUD_PUBSUB) would.

For tests and for checking a direct deployment. DT's own message format on those
connectors is unpublished, so `--shape` picks one of the shapes the worker's decoder
accepts (core/direct.py): the HTTP-push body as JSON (default), the same base64-encoded,
or the bare event object.

The cloud SDKs read their usual settings, so the same command reaches a stand-in:
boto3 honours ``AWS_ENDPOINT_URL`` (moto server, LocalStack) and the Pub/Sub client
``PUBSUB_EMULATOR_HOST``. The SDKs are imported only for the scheme used.
"""

from __future__ import annotations

import base64
import json
import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

SHAPES = ("json", "base64", "event")
_TOPIC = re.compile(r"projects/[^/]+/topics/[^/]+")
#: SQS takes at most 10 messages per SendMessageBatch.
_SQS_BATCH = 10


class TargetError(ValueError):
    """`--to` names no queue we can publish to."""


@dataclass(frozen=True)
class Target:
    scheme: str  # "sqs" or "pubsub"
    name: str  # queue URL or name; projects/P/topics/T


def parse_target(text: str) -> Target:
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise TargetError(f"--to wants sqs://<queue URL or name> or pubsub://projects/<p>/topics/<t>, got {text!r}")
    if scheme == "sqs":
        return Target("sqs", rest)
    if scheme == "pubsub":
        if not _TOPIC.fullmatch(rest):
            raise TargetError("--to pubsub:// wants projects/<project>/topics/<topic>")
        return Target("pubsub", rest)
    raise TargetError(f"--to: unknown scheme {scheme!r} (sqs or pubsub)")


def shaped(body: bytes, shape: str) -> bytes:
    """One body in the message shape chosen with `--shape`."""
    if shape == "json":
        return body
    if shape == "base64":
        return base64.b64encode(body)
    if shape == "event":
        return json.dumps(json.loads(body)["event"], separators=(",", ":")).encode()
    raise ValueError(f"shape must be one of {SHAPES}")


def messages(bodies: Sequence[bytes], shape: str, duplicates: float, shuffle: bool, seed: int | None) -> list[bytes]:
    """The messages to publish: each body shaped, a share of them twice, maybe shuffled."""
    rng = random.Random(seed)
    out = [shaped(b, shape) for b in bodies]
    out += [m for m in out if duplicates and rng.random() < duplicates]
    if shuffle:
        rng.shuffle(out)
    return out


def _sqs_publisher(name: str) -> Callable[[Sequence[bytes]], None]:
    import boto3

    client = boto3.client("sqs")
    url = name if name.startswith(("https://", "http://")) else client.get_queue_url(QueueName=name)["QueueUrl"]

    def publish(batch: Sequence[bytes]) -> None:
        for start in range(0, len(batch), _SQS_BATCH):
            chunk = batch[start : start + _SQS_BATCH]
            reply = client.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": m.decode("utf-8")} for i, m in enumerate(chunk)],
            )
            if reply.get("Failed"):
                codes = sorted({f.get("Code", "?") for f in reply["Failed"]})
                raise RuntimeError(f"SQS refused {len(reply['Failed'])} message(s): {', '.join(codes)}")

    return publish


def _pubsub_publisher(topic: str) -> Callable[[Sequence[bytes]], None]:
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()

    def publish(batch: Sequence[bytes]) -> None:
        futures = [client.publish(topic, m) for m in batch]
        for future in futures:
            future.result(timeout=60)

    return publish


def publish(target: Target, batch: Sequence[bytes]) -> int:
    """Publish every message of `batch`; returns how many. Raises on the first refusal."""
    publisher = _sqs_publisher(target.name) if target.scheme == "sqs" else _pubsub_publisher(target.name)
    publisher(batch)
    return len(batch)
