"""The ingest entry point's request shapes (Code Engine and OpenWhisk) and response format."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from ibm_action import __main__ as entry
from tests.dt import SECRET, event_body, event_id_of, signed
from tests.platforms.ibm import code_engine_args, header_map


def _ow_args(body: bytes, headers, *, encode=True, method="post") -> dict:
    return {
        "__ow_method": method,  # OpenWhisk sends it in lower case
        "__ow_headers": {k.lower(): v for k, v in header_map(headers).items()},
        "__ow_path": "",
        "__ow_body": base64.b64encode(body).decode() if encode else body.decode(),
    }


def test_code_engine_base64_body_is_accepted(ibm):
    body = event_body()
    result = entry.main(code_engine_args(body, signed(body)))
    assert result["statusCode"] == 202
    assert result["body"] == {"status": "accepted", "eventId": event_id_of(body)}
    assert result["headers"]["Content-Type"] == "application/json"
    assert ibm.queue_depth() == 1


def test_code_engine_plain_text_body_is_accepted(ibm):
    # Text content types arrive as a plain string in __ce_body.
    body = event_body()
    args = code_engine_args(body, {**signed(body), "Content-Type": "text/plain"})
    args["__ce_body"] = body.decode()
    assert entry.main(args)["statusCode"] == 202


def test_code_engine_spread_json_keys_are_ignored_only_the_signed_bytes_count(ibm):
    body = event_body()
    args = code_engine_args(body, signed(body))
    args["event"] = {"eventId": "forged", "eventType": "touch"}  # what a spread body could carry
    result = entry.main(args)
    assert result["statusCode"] == 202
    assert result["body"]["eventId"] == event_id_of(body)


@pytest.mark.parametrize("encode", [True, False], ids=["base64", "plain"])
def test_openwhisk_raw_web_action_shape_is_accepted(ibm, encode):
    body = event_body()
    result = entry.main(_ow_args(body, signed(body), encode=encode))
    assert result["statusCode"] == 202, result
    assert ibm.queue_depth() == 1


def test_openwhisk_duplicate_is_200_and_bad_signature_401(ibm):
    body = event_body()
    assert entry.main(_ow_args(body, signed(body)))["statusCode"] == 202
    assert entry.main(_ow_args(body, signed(body)))["statusCode"] == 200
    other = event_body()
    bad = entry.main(_ow_args(other, signed(other, secret="x" * 40)))
    assert bad["statusCode"] == 401
    assert bad["body"]["error"] == "unauthorized"


def test_openwhisk_get_is_405(ibm):
    body = event_body()
    result = entry.main(_ow_args(body, signed(body), method="get"))
    assert result["statusCode"] == 405
    assert result["headers"]["Allow"] == "POST"


def test_direct_invocation_without_http_fields_is_405(ibm):
    assert entry.main({"event": {}})["statusCode"] == 405


def test_503_carries_retry_after(ibm):
    body = event_body()
    with ibm.broken("claims"):
        result = entry.main(code_engine_args(body, signed(body)))
    assert result["statusCode"] == 503
    assert result["headers"]["Retry-After"]
    json.dumps(result)  # the platform serialises the whole result


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b""),
        ("", b""),
        (base64.b64encode(b'{"a":1}').decode(), b'{"a":1}'),
        ('{"a":1}', b'{"a":1}'),
        ("  " + base64.b64encode(b"[1]").decode() + "\n", b"[1]"),
        ("abc", b"abc"),  # not valid Base64 (length): the text itself
        ('{"t":"é"}', '{"t":"é"}'.encode()),
        (b"raw", b"raw"),
    ],
)
def test_body_bytes_accepts_base64_or_plain(value, expected):
    assert entry.body_bytes(value) == expected


def test_missing_cloudant_configuration_is_503_naming_the_variable(monkeypatch):
    for name in ("CLOUDANT_URL", "CLOUDANT_APIKEY", "CLOUDANT_USERNAME", "CLOUDANT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DT_SIGNATURE_SECRET", SECRET)
    entry.reset()
    try:
        body = event_body()
        result = entry.main(code_engine_args(body, signed(body)))
    finally:
        entry.reset()
    assert result["statusCode"] == 503
    assert "CLOUDANT_URL" in result["body"]["reason"]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        from core.logs import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def test_credentials_in_the_url_never_reach_the_reply_or_logs(make_ibm):
    harness = make_ibm()
    from ibm_action.cloudant import CloudantConfig, build_service
    from tests.platforms.ibm import free_port

    leaky = build_service(
        CloudantConfig.from_env({**harness.env, "CLOUDANT_URL": f"http://user:hunter2-pw@127.0.0.1:{free_port()}"})
    )
    docs = harness.ingest.outbox.docs  # a new event's single write goes through the outbox
    real, docs.service = docs.service, leaky
    collect = _Collect()
    logger = logging.getLogger("dtconnector")
    logger.addHandler(collect)
    try:
        body = event_body()
        result = entry.main(code_engine_args(body, signed(body)))
    finally:
        docs.service = real
        logger.removeHandler(collect)
    assert result["statusCode"] == 503
    assert "hunter2" not in json.dumps(result)
    assert any("could not claim the event" in line for line in collect.lines)
    assert not any("hunter2" in line for line in collect.lines)
    assert "hunter2" not in repr(CloudantConfig.from_env({"CLOUDANT_URL": "https://u:hunter2@x", "CLOUDANT_APIKEY": "k"}))


def test_openwhisk_bound_parameters_configure_the_action(ibm, monkeypatch):
    """OpenWhisk has no environment variables: settings arrive as bound parameters."""
    settings = {k: v for k, v in ibm.env.items() if k.startswith(("DT_", "CLOUDANT_"))}
    for key in settings:
        monkeypatch.delenv(key, raising=False)
    entry.reset()
    body = event_body()
    result = entry.main({**_ow_args(body, signed(body)), **settings})
    assert result["statusCode"] == 202, result
    assert ibm.queue_depth() == 1


def test_code_engine_body_keys_never_configure_the_function(ibm, monkeypatch):
    monkeypatch.delenv("CLOUDANT_URL")
    entry.reset()
    body = event_body()
    args = code_engine_args(body, signed(body))
    args["CLOUDANT_URL"] = ibm.env["CLOUDANT_URL"]  # as if the JSON body had this key
    result = entry.main(args)
    assert result["statusCode"] == 503
    assert "CLOUDANT_URL" in result["body"]["reason"]
