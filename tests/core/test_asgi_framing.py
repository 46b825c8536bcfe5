"""`framing_error`: the one set of framing rules the ASGI and WSGI apps share."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.asgi import ReceiverASGI, framing_error, local_path
from core.http import Headers


@pytest.mark.parametrize(
    "method, lengths, encodings, status",
    [
        ("POST", ["10"], [], None),
        ("POST", [], ["chunked"], None),
        ("POST", [], ["Chunked "], None),
        ("GET", [], [], None),
        ("POST", [], [], 411),
        ("POST", ["5_17"], [], 400),
        ("POST", ["+5"], [], 400),
        ("POST", ["-1"], [], 400),
        ("POST", ["５"], [], 400),  # a full-width digit: str.isdigit() alone would accept it
        ("POST", ["5", "5"], [], 400),
        ("POST", ["5"], ["chunked"], 400),
        ("POST", [], ["gzip, chunked"], 400),
        ("POST", [], ["chunked", "chunked"], 400),
        ("POST", ["300"], [], 413),
    ],
)
def test_framing(method, lengths, encodings, status):
    refused = framing_error(method, lengths, encodings, limit=200)
    assert (refused.status if refused else None) == status


def test_local_path_below_a_mount_point():
    assert local_path({"path": "/dt/healthz", "root_path": "/dt"}) == "/healthz"  # Starlette keeps the prefix
    assert local_path({"path": "/healthz", "root_path": "/dt"}) == "/healthz"  # other routers strip it
    assert local_path({"path": "/dt", "root_path": "/dt"}) == "/"


def test_asgi_headers_are_case_insensitive_multi_valued_and_latin1():
    headers = Headers.from_asgi([(b"X-Dt-Signature", b"caf\xe9"), (b"content-length", b"5"),
                                 (b"Content-Length", b"6")])
    assert headers.get("x-dt-signature") == "café"
    assert headers.get_all("CONTENT-LENGTH") == ["5", "6"]
    assert "X-DT-SIGNATURE" in headers and "transfer-encoding" not in headers
    assert repr(headers) == "Headers(['content-length', 'x-dt-signature'])"  # names only, never values


class _NoIngest:
    max_body_bytes = 1000

    def admit(self, request, *, may_fetch_keys=True):
        raise AssertionError("a refused request never reaches the ingest")

    async def accept(self, admitted):
        raise AssertionError("a refused request never reaches the ingest")

    def record(self, response, started):
        self.recorded = response.status


@pytest.mark.parametrize("names", [(b"content-length", b"content-length"), (b"Content-Length", b"content-length")])
def test_an_asgi_server_passing_two_lengths_gets_400_whatever_their_case(names):
    """The ASGI spec says servers lower-case header names; one that does not (or passes a
    duplicate on) still gets the framing rules."""
    ingest = _NoIngest()
    app = ReceiverASGI(ingest, lambda: {"status": "ok"})
    scope = {"type": "http", "method": "POST", "path": "/", "root_path": "",
             "headers": [(names[0], b"5"), (names[1], b"6")]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"12345", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "bad_request", "reason": "more than one Content-Length"}
    assert ingest.recorded == 400
