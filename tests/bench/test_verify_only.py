"""`bench/verify_only.py`, the floor row of `make bench` section 2, does the checks it claims
(a floor that skipped verifying would make every target look further away than it is)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dt import SECRET, event_body, event_id_of, signed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def floor_url(tmp_path):
    log = open(tmp_path / "stderr", "w+")
    env = {**os.environ, "DT_SIGNATURE_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.verify_only"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            log.seek(0)
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", log.read())
            url = found and found.group(1)
        assert url, f"bench.verify_only did not start: {log.read()}"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log.close()


def _post(url: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_floor_verifies_and_parses_then_answers_202(floor_url):
    body = event_body()
    status, answer = _post(floor_url, body, signed(body))
    assert status == 202
    assert event_id_of(body).encode() in answer


def test_the_floor_refuses_a_forged_signature_401_and_a_bad_body_400(floor_url):
    body = event_body()
    assert _post(floor_url, body, signed(body, "not-the-secret-0123456789abcdef"))[0] == 401
    broken = b'{"event": {}}'
    assert _post(floor_url, broken, signed(broken))[0] == 400
