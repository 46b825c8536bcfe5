"""`dtconnector send --to`: publishing DT-shaped messages straight into SQS (a moto server
reached through AWS_ENDPOINT_URL) and Pub/Sub (Google's emulator through
PUBSUB_EMULATOR_HOST), read back through the worker's decoder."""

from __future__ import annotations

import json
import os
import socket

import pytest

from core.direct import decode_direct_message
from core.events import parse_event
from dtconnector.cli import main
from emulator.direct import TargetError, messages, parse_target
from tests.platforms import gcp


def send_main(argv: list[str]) -> int:
    return main(["send", *argv])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server():
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto server is not installed ({exc.name}): pip install -e '.[test]'")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def sqs(moto_server, monkeypatch):
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return boto3.client("sqs")  # no endpoint_url given: it comes from AWS_ENDPOINT_URL


def drain_sqs(client, url) -> list[str]:
    bodies = []
    while True:
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        bodies += [m["Body"] for m in got]
        client.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


@pytest.mark.parametrize("shape", ["json", "base64", "event"])
def test_send_to_sqs_by_name_through_aws_endpoint_url(sqs, shape, capsys):
    url = sqs.create_queue(QueueName=f"dt-send-{shape}")["QueueUrl"]
    assert send_main(["--to", f"sqs://dt-send-{shape}", "--count", "12", "--seed", "3", "--shape", shape]) == 0
    assert "published 12 message(s)" in capsys.readouterr().out
    received = drain_sqs(sqs, url)
    events = [parse_event(decode_direct_message(b)) for b in received]
    assert len({e.event_id for e in events}) == 12
    if shape == "event":
        assert all(json.loads(b).get("eventId") for b in received)


def test_send_to_sqs_by_url_with_duplicates(sqs):
    url = sqs.create_queue(QueueName="dt-send-dups")["QueueUrl"]
    assert send_main(["--to", f"sqs://{url}", "--count", "40", "--duplicates", "0.5", "--seed", "1", "--shuffle"]) == 0
    ids = [parse_event(decode_direct_message(b)).event_id for b in drain_sqs(sqs, url)]
    assert len(set(ids)) == 40 and len(ids) > 40  # some events published twice, as DT may


def test_send_to_a_missing_queue_fails_clearly(sqs, capsys):
    assert send_main(["--to", "sqs://no-such-queue", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert "publishing to sqs://no-such-queue failed" in err and "Traceback" not in err


@pytest.mark.parametrize("to", ["ftp://x", "sqs://", "pubsub://topics/t", "nothing"])
def test_bad_targets_are_refused(to):
    with pytest.raises(TargetError):
        parse_target(to)
    assert send_main(["--to", to, "--count", "1"]) == 2


def test_url_and_to_are_exclusive():
    assert send_main(["--count", "1"]) == 2
    assert send_main(["--url", "http://127.0.0.1:1/", "--to", "sqs://q", "--count", "1"]) == 2


def test_messages_duplicate_and_shuffle_deterministically():
    bodies = [json.dumps({"event": {"eventId": str(i)}}).encode() for i in range(20)]
    once = messages(bodies, "json", 0.0, False, 1)
    assert once == bodies
    dup = messages(bodies, "json", 0.5, True, 1)
    assert dup == messages(bodies, "json", 0.5, True, 1) and len(dup) > 20 and set(dup) == set(bodies)


@pytest.mark.xdist_group(gcp.STAND_IN.xdist_group)  # the emulators: on the contract suite's worker
def test_send_to_pubsub_through_the_emulator():
    from tests.platforms.base import running

    with running(gcp.STAND_IN) as stand_in:  # skips where the emulators cannot run
        assert os.environ.get("PUBSUB_EMULATOR_HOST")
        pub, sub = stand_in.publisher, stand_in.subscriber
        topic = pub.topic_path(stand_in.project, "dt-send-to")
        subscription = sub.subscription_path(stand_in.project, "dt-send-to-sub")
        pub.create_topic(name=topic)
        sub.create_subscription(request={"name": subscription, "topic": topic})
        assert send_main(["--to", f"pubsub://{topic}", "--count", "7", "--shape", "base64"]) == 0
        received = []
        while len(received) < 7:
            response = sub.pull(request={"subscription": subscription, "max_messages": 10}, timeout=60)
            received += [r.message.data for r in response.received_messages]
            sub.acknowledge(request={"subscription": subscription, "ack_ids": [r.ack_id for r in response.received_messages]})
        assert len({parse_event(decode_direct_message(d)).event_id for d in received}) == 7
