"""DT_SIGNATURE_SECRET_ARN: the secret read from Secrets Manager once per container."""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import pytest

import aws_lambda.handler as handler
from tests.dt import SECRET, event_body, signed
from tests.platforms.aws import function_url_event

NEW = "rotated-secret-0123456789abcdef0123"


def deliver(body: bytes, secret: str = SECRET) -> dict:
    return handler.ingest(function_url_event(body, signed(body, secret=secret)), None)


@contextlib.contextmanager
def counting(operation: str):
    """Counts the SDK calls named `operation` made while inside."""
    from botocore.client import BaseClient

    calls = []
    real = BaseClient._make_api_call

    def spy(client, name, params):
        if name == operation:
            calls.append(params)
        return real(client, name, params)

    with mock.patch.object(BaseClient, "_make_api_call", spy):
        yield calls


@pytest.fixture
def secrets(aws):
    client = aws.client("secretsmanager")
    made = []

    def create(value: str) -> str:
        arn = client.create_secret(Name=f"dt-secret-{len(made)}-{id(made)}", SecretString=value)["ARN"]
        made.append(arn)
        return arn

    create.client = client
    yield create
    for arn in made:
        client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def test_secret_is_read_once_and_cached(make_harness, secrets):
    arn = secrets(SECRET)
    make_harness(DT_SIGNATURE_SECRET=None, DT_SIGNATURE_SECRET_ARN=arn)
    with counting("GetSecretValue") as calls:
        for _ in range(3):
            assert deliver(event_body())["statusCode"] == 202
    assert [c["SecretId"] for c in calls] == [arn]


def test_cached_secret_survives_a_rotation_until_the_container_is_recycled(make_harness, secrets):
    arn = secrets(SECRET)
    make_harness(DT_SIGNATURE_SECRET=None, DT_SIGNATURE_SECRET_ARN=arn)
    assert deliver(event_body())["statusCode"] == 202
    secrets.client.put_secret_value(SecretId=arn, SecretString=NEW)
    assert deliver(event_body(), NEW)["statusCode"] == 401  # this container keeps the old one
    handler.reset()  # a new container
    assert deliver(event_body(), NEW)["statusCode"] == 202
    assert deliver(event_body(), SECRET)["statusCode"] == 401


def test_json_secret_carries_the_previous_secret_for_rotation(make_harness, secrets):
    arn = secrets(json.dumps({"DT_SIGNATURE_SECRET": NEW, "DT_SIGNATURE_SECRET_PREVIOUS": SECRET}))
    make_harness(DT_SIGNATURE_SECRET=None, DT_SIGNATURE_SECRET_ARN=arn)
    assert deliver(event_body(), NEW)["statusCode"] == 202
    assert deliver(event_body(), SECRET)["statusCode"] == 202
    assert deliver(event_body(), "some-other-secret-0123456789abcdef")["statusCode"] == 401


def test_arn_wins_over_a_plain_env_secret(make_harness, secrets):
    arn = secrets(NEW)
    make_harness(DT_SIGNATURE_SECRET=SECRET, DT_SIGNATURE_SECRET_ARN=arn)
    assert deliver(event_body(), NEW)["statusCode"] == 202
    assert deliver(event_body(), SECRET)["statusCode"] == 401


def test_unreadable_secret_answers_503_and_is_retried_next_time(make_harness, secrets, aws):
    missing = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:dt-later-{id(secrets)}-AbCdEf"
    make_harness(DT_SIGNATURE_SECRET=None, DT_SIGNATURE_SECRET_ARN=missing)
    reply = deliver(event_body())
    assert reply["statusCode"] == 503
    assert json.loads(reply["body"])["reason"] == "signature secret unavailable"
    assert reply["headers"]["Retry-After"]
    # The failure was not cached: once the secret can be read, the next request uses it.
    arn = secrets(SECRET)
    with mock.patch.dict("os.environ", {"DT_SIGNATURE_SECRET_ARN": arn}):
        assert deliver(event_body())["statusCode"] == 202


def test_secrets_manager_unreachable_is_503_not_a_crash(make_harness, secrets):
    from botocore.client import BaseClient
    from botocore.exceptions import EndpointConnectionError

    arn = secrets(SECRET)
    make_harness(DT_SIGNATURE_SECRET=None, DT_SIGNATURE_SECRET_ARN=arn)

    def unreachable(client, name, params):
        raise EndpointConnectionError(endpoint_url=client.meta.endpoint_url)

    with mock.patch.object(BaseClient, "_make_api_call", unreachable):
        reply = deliver(event_body())
    assert reply["statusCode"] == 503
    assert SECRET not in reply["body"]


def test_empty_secret_is_refused(make_harness, secrets):
    arn = secrets(json.dumps({"unrelated": "x"}))
    make_harness(DT_SIGNATURE_SECRET=None, DT_SIGNATURE_SECRET_ARN=arn)
    assert deliver(event_body())["statusCode"] == 503
