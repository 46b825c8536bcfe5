"""`ingest` accepts every request shape AWS sends it and answers in the proxy format."""

from __future__ import annotations

import base64
import json

import pytest

import aws_lambda.handler as handler
from tests.dt import event_body, event_id_of, signed
from tests.platforms.aws import function_url_event


def http_api_v2(body: bytes, headers: dict, *, b64: bool = False, method: str = "POST") -> dict:
    """API Gateway HTTP API, payload format 2.0 (route `POST /dt`, stage `$default`)."""
    return {
        "version": "2.0",
        "routeKey": "POST /dt",
        "rawPath": "/dt",
        "rawQueryString": "",
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api1",
            "domainName": "api1.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": "/dt", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "dt"},
            "requestId": "r1",
            "routeKey": "POST /dt",
            "stage": "$default",
            "timeEpoch": 1795341600000,
        },
        "body": base64.b64encode(body).decode() if b64 else body.decode(),
        "isBase64Encoded": b64,
    }


def rest_v1(body: bytes, pairs: list[tuple[str, str]], *, b64: bool = False, method: str = "POST") -> dict:
    """API Gateway REST API, payload format 1.0: `headers` keeps the last value of each
    header (names as sent), `multiValueHeaders` keeps them all."""
    headers, multi = {}, {}
    for name, value in pairs:
        headers[name] = value
        multi.setdefault(name, []).append(value)
    return {
        "resource": "/{proxy+}",
        "path": "/dt/hook",
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "dt/hook"},
        "stageVariables": None,
        "requestContext": {"httpMethod": method, "path": "/prod/dt/hook", "stage": "prod", "requestId": "r1"},
        "body": base64.b64encode(body).decode() if b64 else body.decode(),
        "isBase64Encoded": b64,
    }


def queued_bodies(harness) -> list[str]:
    msgs = harness.sqs.receive_message(
        QueueUrl=harness.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return msgs


def test_http_api_payload_2_is_accepted_and_queued_verbatim(harness):
    body = event_body()
    reply = handler.ingest(http_api_v2(body, signed(body)), None)
    assert reply["statusCode"] == 202
    assert json.loads(reply["body"]) == {"status": "accepted", "eventId": event_id_of(body)}
    [msg] = queued_bodies(harness)
    assert msg["Body"].encode() == body
    assert msg["MessageAttributes"]["eventId"]["StringValue"] == event_id_of(body)


@pytest.mark.parametrize("b64", [False, True], ids=["text", "base64"])
def test_function_url_event_text_or_base64(harness, b64):
    body = event_body()
    event = function_url_event(body, signed(body))
    if b64:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    assert event["isBase64Encoded"] is b64
    assert handler.ingest(event, None)["statusCode"] == 202
    [msg] = queued_bodies(harness)
    assert msg["Body"].encode() == body


def test_base64_body_is_decoded_before_the_checksum(harness):
    # Signed over the raw bytes: verifying the base64 text instead would answer 401.
    body = event_body()
    reply = handler.ingest(http_api_v2(body, signed(body), b64=True), None)
    assert reply["statusCode"] == 202, reply["body"]


def test_rest_payload_1_is_accepted(harness):
    body = event_body()
    pairs = list(signed(body).items())
    reply = handler.ingest(rest_v1(body, pairs), None)
    assert reply["statusCode"] == 202, reply["body"]
    assert handler.ingest(rest_v1(body, pairs, b64=True), None)["statusCode"] == 200  # duplicate


def test_rest_payload_1_uses_every_value_of_multi_value_headers(harness):
    body = event_body()
    token = signed(body)["X-Dt-Signature"]
    # `headers` alone shows one valid token; `multiValueHeaders` shows DT sent two.
    event = rest_v1(body, [("X-Dt-Signature", "forged.token.value"), ("X-Dt-Signature", token)])
    assert event["headers"]["X-Dt-Signature"] == token
    reply = handler.ingest(event, None)
    assert reply["statusCode"] == 401
    assert "more than one" in json.loads(reply["body"])["reason"]


def test_rest_payload_1_without_multi_value_headers_uses_headers(harness):
    body = event_body()
    event = rest_v1(body, list(signed(body).items()))
    event["multiValueHeaders"] = None
    assert handler.ingest(event, None)["statusCode"] == 202


def test_repeated_header_joined_by_a_comma_is_refused(harness):
    body = event_body()
    token = signed(body)["X-Dt-Signature"]
    event = function_url_event(body, [("X-Dt-Signature", token), ("X-Dt-Signature", token)])
    assert event["headers"]["x-dt-signature"] == f"{token},{token}"
    assert handler.ingest(event, None)["statusCode"] == 401


def test_invalid_base64_is_400(harness):
    body = event_body()
    event = function_url_event(body, signed(body))
    event["body"], event["isBase64Encoded"] = "%%% not base64 %%%", True
    reply = handler.ingest(event, None)
    assert reply["statusCode"] == 400
    assert "base64" in json.loads(reply["body"])["reason"]
    assert harness.queue_depth() == 0


def test_base64_body_that_is_not_utf8_is_400(harness):
    body = b"\xff\xfe not utf-8"
    reply = handler.ingest(http_api_v2(body, signed(body), b64=True), None)
    assert reply["statusCode"] == 400


def test_event_without_body_is_400(harness):
    event = function_url_event(b"", signed(b""))
    assert "body" not in event
    assert handler.ingest(event, None)["statusCode"] == 400


@pytest.mark.parametrize("make", [http_api_v2, lambda b, h, **kw: rest_v1(b, list(h.items()), **kw)], ids=["v2", "v1"])
def test_method_is_read_from_either_payload_format(harness, make):
    body = event_body()
    reply = handler.ingest(make(body, signed(body), method="GET"), None)
    assert reply["statusCode"] == 405
    assert reply["headers"]["Allow"] == "POST"


def test_not_an_http_event_is_answered_not_raised(harness):
    assert handler.ingest(["not", "a", "dict"], None)["statusCode"] == 400
    assert handler.ingest({}, None)["statusCode"] == 405


def test_response_is_the_proxy_format(harness):
    body = event_body()
    reply = handler.ingest(function_url_event(body, signed(body)), None)
    assert set(reply) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert isinstance(reply["statusCode"], int) and isinstance(reply["body"], str)
    assert reply["isBase64Encoded"] is False
    assert reply["headers"]["Content-Type"] == "application/json"
    assert all(isinstance(v, str) for v in reply["headers"].values())


def test_store_failure_answers_503_with_retry_after(harness):
    body = event_body()
    with harness.broken("claims"):
        reply = handler.ingest(function_url_event(body, signed(body)), None)
    assert reply["statusCode"] == 503
    assert reply["headers"]["Retry-After"]


def test_missing_configuration_answers_503_and_names_the_variable(harness, monkeypatch):
    monkeypatch.delenv("DT_QUEUE_URL")
    handler.reset()  # a container started without it
    body = event_body()
    reply = handler.ingest(function_url_event(body, signed(body)), None)
    assert reply["statusCode"] == 503
    assert "DT_QUEUE_URL" in json.loads(reply["body"])["reason"]


def test_clients_and_receiver_are_built_once_per_container(harness):
    body = event_body()
    handler.ingest(function_url_event(body, signed(body)), None)
    first = handler.receiver()
    other = event_body()
    handler.ingest(function_url_event(other, signed(other)), None)
    assert handler.receiver() is first
    handler.reset()
    assert handler.receiver() is not first


def test_ingest_clients_have_short_timeouts(harness):
    # Worst case per call: (connect + read) x attempts, and ingest makes about four calls.
    config = handler._Clients(handler.INGEST_CLIENT_CONFIG)("dynamodb").meta.config
    assert (config.connect_timeout + config.read_timeout) * config.retries["total_max_attempts"] <= 6


def test_unusual_event_id_gets_a_safe_message_attribute(harness):
    body = event_body(event_id="bad\u0001id")
    assert handler.ingest(function_url_event(body, signed(body)), None)["statusCode"] == 202
    [msg] = queued_bodies(harness)
    assert msg["MessageAttributes"]["eventId"]["StringValue"].startswith("h_")
