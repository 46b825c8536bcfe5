"""`framing_error`: the one set of framing rules the ASGI and WSGI apps share."""

from __future__ import annotations

import pytest

from core.asgi import framing_error, local_path


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
