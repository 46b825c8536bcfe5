"""No value a request carries ever reaches configuration, on any platform.

Every setting name the platform reads (each ``DT_*`` of core and of the platform, and each
store, queue or credential variable its code or SDK reads) is put into the request three
ways at once: as top-level keys of the JSON body (which Code Engine spreads into `args`),
as query parameters, and as headers (with ``_`` and with ``-``). The values are the
attacker's: a secret of theirs, unsigned requests allowed, a tiny body limit, other table
names, and every address pointing at a loopback socket that counts who connects to it.

The same request sequence runs on a fresh container (its first request builds the
configuration) with and without that material: the status codes must be identical, nothing
may connect to the attacker's socket, and the deployment's secret may reach no log line.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.dt import SECRET, event_body, signed

ROOT = Path(__file__).resolve().parents[2]
ATTACKER_SECRET = "attacker-chosen-secret-0123456789abcdef"
#: Where each platform's code lives; core is scanned for every platform.
SOURCES = {
    "aws": "aws_lambda",
    "gcp": "gcp_function",
    "azure": "azure_trigger",
    "ibm": "ibm_action",
    "heroku": "heroku",
    "local": "local_receiver",
}
#: Variables the platform's SDK reads by itself (not named in our code).
SDK_SETTINGS = {
    "aws": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "gcp": ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_APPLICATION_CREDENTIALS"),
    "azure": ("AzureWebJobsStorage",),
    "ibm": (),
    "heroku": ("REDIS_URL", "REDIS_TLS_URL"),
    "local": (),
}
_SETTING_LITERAL = re.compile(
    r"""["'](DT_[A-Z0-9_]+|CLOUDANT_[A-Z0-9_]+|REDIS_[A-Z0-9_]+|AzureWebJobs\w+|AWS_[A-Z0-9_]+|\w+_EMULATOR_HOST)["']"""
)
#: Keys that dress a request up as another platform's activation (IBM reads args).
PLATFORM_SHAPES = {"__ow_method": "post", "__ow_query": "", "__ow_headers": {}, "__ow_body": "", "__ow_path": ""}


def setting_names(platform: str) -> list[str]:
    """Every setting name written as a string literal in core and in the platform's code,
    plus what its SDK reads: found by reading the code, so a new setting is covered."""
    names = set(SDK_SETTINGS[platform])
    for folder in ("core", SOURCES[platform]):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(_SETTING_LITERAL.findall(path.read_text()))
    return sorted(n for n in names if not n.startswith(("DT_TEST_", "DT_FUZZ_", "DT_BENCH_")))


def hostile_value(name: str, address: str) -> str:
    """What an attacker would set `name` to: an address of theirs, a secret of theirs, or a
    value that would visibly change the answers if it were taken."""
    host = address.removeprefix("http://")
    upper = name.upper()
    if upper.endswith("_EMULATOR_HOST"):
        return host
    if "STORAGE" in upper or "CONNECTION" in upper:
        return ("DefaultEndpointsProtocol=http;AccountName=attacker;AccountKey=YXR0YWNrZXI=;"
                f"QueueEndpoint={address}/attacker;TableEndpoint={address}/attacker;BlobEndpoint={address}/attacker")
    if upper.startswith("REDIS") and "URL" in upper:
        return f"redis://{host}/0"
    if any(part in upper for part in ("URL", "ENDPOINT", "ISSUER", "HOST")):
        return f"{address}/data-connector" if "ISSUER" in upper else address
    if "SECRET" in upper or "PASSWORD" in upper or "KEY" in upper or "TOKEN" in upper:
        return ATTACKER_SECRET
    return {
        "DT_ALLOW_UNSIGNED": "1",
        "DT_SIGNATURE_MODE": "asymmetric",
        "DT_MAX_BODY_BYTES": "16",
        "DT_HANDLERS": "attacker_module_that_does_not_exist",
        "DT_LOG_LEVEL": "DEBUG",
    }.get(name, "attacker")


class ConnectionCounter:
    """A loopback socket standing in for the attacker's server: it accepts, counts and
    closes every connection, so a client that reached it fails fast instead of hanging."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._server.settimeout(0.1)
        self.address = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__!r}")


@pytest.fixture
def attacker():
    counter = ConnectionCounter()
    yield counter
    counter.close()


@pytest.fixture
def log_lines(capfd):
    capture = LogCapture()
    loggers = [logging.getLogger(), logging.getLogger("dtconnector")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    try:
        def lines() -> list[str]:
            out, err = capfd.readouterr()
            return capture.lines + out.splitlines() + err.splitlines()

        yield lines
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(capture)
            lg.setLevel(level)


def run_sequence(platform, hostile: dict[str, str] | None) -> list[int]:
    """A fresh container's first requests, then later ones: unsigned, signed with the
    attacker's secret, genuine, a genuine duplicate, another genuine event."""

    def body(device: str) -> bytes:
        raw = event_body(device=device)
        if hostile is None:
            return raw
        doc = json.loads(raw)
        doc.update({**PLATFORM_SHAPES, **hostile})
        return json.dumps(doc).encode()

    def headers(extra: dict[str, str]) -> list[tuple[str, str]]:
        pairs = list(extra.items())
        for name, value in (hostile or {}).items():
            pairs += [(name, value), (name.replace("_", "-"), value)]
        return pairs

    path = "/" if hostile is None else "/?" + urlencode(hostile)
    platform.new_container()
    unsigned, forged, genuine, other = body("d-unsigned"), body("d-forged"), body("d-genuine"), body("d-other")
    return [
        platform.deliver(unsigned, headers({"Content-Type": "application/json"}), path=path).status,
        platform.deliver(forged, headers(signed(forged, ATTACKER_SECRET)), path=path).status,
        platform.deliver(genuine, headers(signed(genuine)), path=path).status,
        platform.deliver(genuine, headers(signed(genuine)), path=path).status,
        platform.deliver(other, headers(signed(other)), path=path).status,
    ]


def test_request_values_never_reach_configuration(stand_in, platform, seen, attacker, log_lines):
    names = setting_names(stand_in.name)
    assert "DT_SIGNATURE_SECRET" in names and "DT_ALLOW_UNSIGNED" in names
    hostile = {name: hostile_value(name, attacker.address) for name in names}

    control = run_sequence(platform, None)
    attacked = run_sequence(platform, hostile)

    assert control == [401, 401, 202, 200, 202]
    assert attacked == control
    assert attacker.count == 0, "a client connected to an address named in the request"
    platform.drain()
    assert sorted(e.device_id for e in seen) == ["d-genuine", "d-genuine", "d-other", "d-other"]
    # The deployment's secret only: the attacker's is request data, which SDK debug logs
    # (botocore's, say) may print with the message body they send.
    assert [line for line in log_lines() if SECRET in line] == []
