"""`bench/verify_only.py`, the floor row of `make bench` section 2, does the checks it claims
(a floor that skipped verifying would make every target look further away than it is)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from bench import receiver_load
from tests.dt import event_body, event_id_of, signed


@pytest.fixture
def floor_url(tmp_path):
    server = receiver_load.floor(str(tmp_path))  # as the bench starts it: signed with its secret
    try:
        yield server.url
    finally:
        server.stop()


def _post(url: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_floor_verifies_and_parses_then_answers_202(floor_url):
    body = event_body()
    status, answer = _post(floor_url, body, signed(body, receiver_load.SECRET))
    assert status == 202
    assert event_id_of(body).encode() in answer


def test_the_floor_refuses_a_forged_signature_401_and_a_bad_body_400(floor_url):
    body = event_body()
    assert _post(floor_url, body, signed(body, "not-the-secret-0123456789abcdef"))[0] == 401
    broken = b'{"event": {}}'
    assert _post(floor_url, broken, signed(broken, receiver_load.SECRET))[0] == 400
