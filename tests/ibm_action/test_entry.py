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
        "__ow_query": "",
        "__ow_body": base64.b64encode(body).decode() if encode else body.decode(),
    }


@pytest.fixture
def openwhisk(monkeypatch):
    """The process environment OpenWhisk's action runtime gives every activation."""
    monkeypatch.setenv(entry.OPENWHISK_MARKER, "/guest/dt-ingest")


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
def test_openwhisk_raw_web_action_shape_is_accepted(ibm, openwhisk, encode):
    body = event_body()
    result = entry.main(_ow_args(body, signed(body), encode=encode))
    assert result["statusCode"] == 202, result
    assert ibm.queue_depth() == 1


def test_openwhisk_duplicate_is_200_and_bad_signature_401(ibm, openwhisk):
    body = event_body()
    assert entry.main(_ow_args(body, signed(body)))["statusCode"] == 202
    assert entry.main(_ow_args(body, signed(body)))["statusCode"] == 200
    other = event_body()
    bad = entry.main(_ow_args(other, signed(other, secret="x" * 40)))
    assert bad["statusCode"] == 401
    assert bad["body"]["error"] == "unauthorized"


def test_openwhisk_get_is_405(ibm, openwhisk):
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


def test_openwhisk_bound_parameters_configure_the_action(ibm, openwhisk, monkeypatch):
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


ATTACKER_SECRET = "attacker-chosen-secret-0123456789abcdef"


def _listener():
    """A loopback socket that counts the connections made to it (the attacker's server)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(2)
        server.close()

    return f"http://127.0.0.1:{server.getsockname()[1]}", accepted, close


def _forged_openwhisk_body(body: bytes, attacker_url: str) -> bytes:
    """The reproduction from the security report: a JSON body that dresses up as an
    OpenWhisk activation and carries settings, spread by Code Engine into `args`."""
    doc = json.loads(body)
    doc.update({
        "__ow_method": "post",
        "__ow_query": "",
        "__ow_headers": {},
        "__ow_body": "",
        "DT_SIGNATURE_SECRET": ATTACKER_SECRET,
        "DT_ALLOW_UNSIGNED": "1",
        "CLOUDANT_URL": attacker_url,
        "CLOUDANT_APIKEY": "attacker",
    })
    return json.dumps(doc).encode()


def test_code_engine_request_dressed_as_openwhisk_cannot_configure_the_function(make_ibm):
    """Issue 14's reproduction: the first request to a fresh container carries the attacker's
    secret and Cloudant URL. It must get 401, the attacker's tokens 401, genuine ones 202,
    and nothing may connect to the attacker's address."""
    harness = make_ibm()
    url, accepted, close = _listener()
    try:
        entry.reset()  # a fresh container: its first request builds the clients
        first = _forged_openwhisk_body(event_body(), url)
        assert entry.main(code_engine_args(first, {"Content-Type": "application/json"}))["statusCode"] == 401
        forged = _forged_openwhisk_body(event_body(), url)
        assert entry.main(code_engine_args(forged, signed(forged, ATTACKER_SECRET)))["statusCode"] == 401
        genuine = _forged_openwhisk_body(event_body(), url)
        result = entry.main(code_engine_args(genuine, signed(genuine)))
        assert result["statusCode"] == 202, result
        assert harness.queue_depth() == 1
        assert accepted == []
    finally:
        close()


def test_openwhisk_shape_is_ignored_on_code_engine(ibm):
    """Without OpenWhisk's runtime around us, ``__ow_*`` keys are request data: a request
    with only those is not an HTTP request at all (405), and configures nothing."""
    body = event_body()
    result = entry.main({**_ow_args(body, signed(body)), "DT_ALLOW_UNSIGNED": "1"})
    assert result["statusCode"] == 405
    assert ibm.queue_depth() == 0


def test_code_engine_shape_is_ignored_on_openwhisk(ibm, openwhisk):
    body = event_body()
    assert entry.main(code_engine_args(body, signed(body)))["statusCode"] == 405
    assert ibm.queue_depth() == 0


def test_openwhisk_non_raw_request_never_configures_the_action(ibm, openwhisk, monkeypatch):
    """A non-raw web action merges the request's body and query into `args`: without
    ``__ow_query`` (raw actions always have it) no parameter is read as a setting."""
    monkeypatch.delenv("CLOUDANT_URL")
    entry.reset()
    body = event_body()
    args = _ow_args(body, signed(body))
    del args["__ow_query"]
    args["CLOUDANT_URL"] = ibm.env["CLOUDANT_URL"]
    result = entry.main(args)
    assert result["statusCode"] == 503
    assert "CLOUDANT_URL" in result["body"]["reason"]
