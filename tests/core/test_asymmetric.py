"""`DT-Asymmetric-Signature` (ES256 with DT's published keys) and `DT_SIGNATURE_MODE`,
through the real Receiver on SQLite, against a loopback key server (emulator.jwks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest

pytest.importorskip("cryptography", reason="asymmetric verification needs the 'asymmetric' extra")

from core import logs
from core.config import DEFAULT_JWKS_ISSUER, ConfigError, Settings
from core.http import Headers, Request
from core.receiver import Receiver
from emulator.jwks import JwksServer, generate_private_key_pem, key_id, public_jwk, public_key_pem
from emulator.signing import asymmetric_claims, sign, sign_asymmetric
from tests.dt import SECRET, event_body
from tests.platforms.base import free_port

ORG = "org-0123456789abcdefghij"
KEY = generate_private_key_pem()
KID = "dt-key-1"
OTHER_KEY = generate_private_key_pem()
OTHER_KID = "dt-key-2"
MARGIN_S = 0.7  # scheduling slack on a busy 2-core machine


@pytest.fixture
def server():
    with JwksServer([(KID, KEY)]) as running:
        yield running


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logs.log.addHandler(handler)
    old = logs.log.level
    logs.log.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logs.log.removeHandler(handler)
    logs.log.setLevel(old)


@pytest.fixture
def make_receiver(claim_store, queue, clock, server):
    """A Receiver configured from env, as every platform builds it. `secret=False` unsets it."""

    def make(secret: bool = True, issuer: str | None = None, **env):
        values = {"DT_CLOCK_LEEWAY_S": "60", "DT_JWKS_ISSUER": issuer or server.issuer}
        if secret:
            values["DT_SIGNATURE_SECRET"] = SECRET
        values.update({k: v for k, v in env.items() if v is not None})
        return Receiver(Settings.from_env(values), claim_store, queue, clock=clock)

    return make


def asym(body: bytes, clock, server, *, key=KEY, kid=KID, **kwargs) -> str:
    kwargs.setdefault("issuer", server.issuer)
    kwargs.setdefault("sub", ORG)
    kwargs.setdefault("iat", int(clock.now))
    return sign_asymmetric(body, key, kid, **kwargs)


def post(receiver, body: bytes, headers) -> "tuple[int, dict]":
    response = receiver.handle(Request("POST", body, Headers(headers)))
    return response.status, response.payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signature)


# --- a valid token, and each way one can be wrong ----------------------------------------


def test_valid_asymmetric_signature_is_accepted_and_queued(make_receiver, clock, server, queue):
    receiver = make_receiver(secret=False, DT_SIGNATURE_MODE="asymmetric", DT_ORGANIZATION_ID=ORG)
    body = event_body()
    status, payload = post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server)})
    assert (status, payload["status"]) == (202, "accepted")
    assert queue.depth() == 1


@pytest.mark.parametrize("name", ["dt-asymmetric-signature", "DT-ASYMMETRIC-SIGNATURE"])
def test_header_name_is_case_insensitive(make_receiver, clock, server, name):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    assert post(receiver, body, {name: asym(body, clock, server)})[0] == 202


def _case(case: str, body: bytes, clock, server) -> "tuple[bytes, str]":
    now = int(clock.now)
    if case == "wrong-issuer":
        return body, asym(body, clock, server, issuer=DEFAULT_JWKS_ISSUER)
    if case == "wrong-org":
        return body, asym(body, clock, server, sub="org-someone-else")
    if case == "no-sub":
        return body, asym(body, clock, server, sub=None)
    if case == "expired":  # DT's tokens live 300 s; 60 s leeway
        return body, asym(body, clock, server, iat=now - 400)
    if case == "future-iat":
        return body, asym(body, clock, server, iat=now + 600)
    if case == "no-exp":
        return body, asym(body, clock, server, exp=None)
    if case == "checksum-mismatch":
        return body.replace(b"21.5", b"99.9"), asym(body, clock, server)
    if case == "no-checksum":
        return body, asym(body, clock, server, checksum_sha256=None)
    if case == "wrong-key":  # right kid, signed by someone else's key
        return body, asym(body, clock, server, key=OTHER_KEY)
    if case == "no-kid":
        token = asym(body, clock, server)
        header = {"alg": "ES256", "typ": "JWT"}
        return body, _b64(json.dumps(header).encode()) + token[token.index(".") :]
    if case == "garbage":
        return body, "not.a.jwt"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "wrong-issuer", "wrong-org", "no-sub", "expired", "future-iat", "no-exp",
        "checksum-mismatch", "no-checksum", "wrong-key", "no-kid", "garbage",
    ],
)
def test_invalid_asymmetric_signature_is_401_and_nothing_is_queued(make_receiver, clock, server, queue, case):
    receiver = make_receiver(secret=False, DT_SIGNATURE_MODE="asymmetric", DT_ORGANIZATION_ID=ORG)
    body, token = _case(case, event_body(), clock, server)
    status, payload = post(receiver, body, {"DT-Asymmetric-Signature": token})
    assert status == 401, payload
    assert payload["error"] == "unauthorized"
    assert queue.depth() == 0


def test_within_the_leeway_is_accepted(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    token = asym(body, clock, server, iat=int(clock.now) + 30)  # DT's clock 30 s fast
    assert post(receiver, body, {"DT-Asymmetric-Signature": token})[0] == 202
    other = event_body()
    token = asym(other, clock, server, iat=int(clock.now) - 330)  # expired 30 s ago
    assert post(receiver, other, {"DT-Asymmetric-Signature": token})[0] == 202


def test_org_is_not_checked_unless_configured(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server, sub="any-org")})[0] == 202


def test_hs256_token_signed_with_the_public_key_as_secret_is_401_without_a_fetch(make_receiver, clock, server):
    """The classic algorithm confusion: HS256 with the (public!) key PEM as the HMAC secret."""
    receiver = make_receiver(secret=False, DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    claims = {
        "checksum_sha256": hashlib.sha256(body).hexdigest(),
        "iat": int(clock.now), "exp": int(clock.now) + 300, "iss": server.issuer, "sub": ORG,
    }
    for secret in (public_key_pem(KEY), json.dumps(public_jwk(KEY, KID)).encode()):
        unsigned = forged({"alg": "HS256", "typ": "JWT", "kid": KID}, claims).rsplit(".", 1)[0]
        mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        status, payload = post(receiver, body, {"DT-Asymmetric-Signature": unsigned + "." + _b64(mac)})
        assert status == 401 and "ES256" in payload["reason"]
    assert server.requests == 0


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_401(make_receiver, clock, server, alg):
    receiver = make_receiver(secret=False, DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    claims = {"checksum_sha256": hashlib.sha256(body).hexdigest(), "iat": int(clock.now),
              "exp": int(clock.now) + 300, "iss": server.issuer}
    assert post(receiver, body, {"DT-Asymmetric-Signature": forged({"alg": alg, "kid": KID}, claims)})[0] == 401
    assert server.requests == 0


def test_two_asymmetric_headers_are_401(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    token = asym(body, clock, server)
    headers = [("DT-Asymmetric-Signature", token), ("dt-asymmetric-signature", token)]
    assert post(receiver, body, headers)[0] == 401


# --- the key cache: one fetch, rotation, rate limit, outages -----------------------------


def test_key_set_is_fetched_once_for_many_requests(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    for _ in range(20):
        body = event_body()
        assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server)})[0] == 202
        clock.now += 30  # ten minutes of traffic
    assert (server.discovery_requests, server.jwks_requests) == (1, 1)


def test_concurrent_requests_on_a_cold_cache_share_one_fetch(make_receiver, clock, server):
    from concurrent.futures import ThreadPoolExecutor

    server.delay_s = 0.2  # every thread arrives while the first fetch is in flight
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    bodies = [event_body() for _ in range(8)]
    tokens = [asym(b, clock, server) for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda bt: post(receiver, bt[0], {"DT-Asymmetric-Signature": bt[1]})[0], zip(bodies, tokens)))
    assert statuses == [202] * 8
    assert (server.discovery_requests, server.jwks_requests) == (1, 1)


def test_no_fetch_at_start_nor_for_secret_signed_requests(make_receiver, clock, server):
    receiver = make_receiver()  # default mode: either
    body = event_body()
    assert post(receiver, body, {"X-Dt-Signature": sign(body, SECRET, iat=int(clock.now))})[0] == 202
    assert server.requests == 0  # (the lazy import is checked in a clean process below)


def test_unknown_kid_refreshes_once_and_finds_the_rotated_key(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server)})[0] == 202
    assert server.jwks_requests == 1

    server.set_keys([(OTHER_KID, OTHER_KEY)])  # DT rotates its key
    clock.now += 60
    rotated = event_body()
    token = asym(rotated, clock, server, key=OTHER_KEY, kid=OTHER_KID)
    assert post(receiver, rotated, {"DT-Asymmetric-Signature": token})[0] == 202
    assert server.jwks_requests == 2  # exactly one refresh
    assert server.discovery_requests == 1  # jwks_uri is remembered

    again = event_body()
    token = asym(again, clock, server, key=OTHER_KEY, kid=OTHER_KID)
    assert post(receiver, again, {"DT-Asymmetric-Signature": token})[0] == 202
    # the retired key is gone from the refreshed set
    old = event_body()
    assert post(receiver, old, {"DT-Asymmetric-Signature": asym(old, clock, server)})[0] == 401
    assert server.jwks_requests == 2  # refresh is rate limited


def test_a_flood_of_random_kids_causes_at_most_one_fetch_per_interval(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server)})[0] == 202
    for _ in range(50):
        clock.now += 0.1
        status, payload = post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server, kid=uuid.uuid4().hex)})
        assert status == 401 and "unknown key" in payload["reason"]
    assert server.jwks_requests == 1
    clock.now += 11  # the interval (10 s) has passed: one more refresh
    for _ in range(5):
        assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server, kid=uuid.uuid4().hex)})[0] == 401
    assert server.jwks_requests == 2


def test_key_server_down_is_503_not_401(make_receiver, clock, server, queue, log_lines):
    issuer = f"http://127.0.0.1:{free_port()}/data-connector"
    receiver = make_receiver(secret=False, issuer=issuer, DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    token = asym(body, clock, server, issuer=issuer)
    status, payload = post(receiver, body, {"DT-Asymmetric-Signature": token})
    assert status == 503 and payload["error"] == "unavailable"
    assert queue.depth() == 0
    error = log_lines()[-1]
    assert error["level"] == "error" and "127.0.0.1" in error["message"]
    response = receiver.handle(Request("POST", body, Headers({"DT-Asymmetric-Signature": token})))
    assert response.status == 503 and response.all_headers()["Retry-After"]


def test_slow_key_server_is_503_within_the_fetch_timeout(make_receiver, clock, server):
    timeout = 0.3
    server.delay_s = 5.0
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric", DT_KEY_FETCH_TIMEOUT_S=str(timeout))
    body = event_body()
    token = asym(body, clock, server)
    started = time.monotonic()
    status, _ = post(receiver, body, {"DT-Asymmetric-Signature": token})
    elapsed = time.monotonic() - started
    assert status == 503
    assert elapsed < timeout + MARGIN_S, elapsed

    # Retried at once: no second wait on the slow server inside the refresh interval.
    assert post(receiver, body, {"DT-Asymmetric-Signature": token})[0] == 503
    assert server.discovery_requests == 1  # (a second fetch would also have taken the timeout)

    server.delay_s = 0.0  # the server recovers; DT retries later
    clock.now += 11
    token = asym(body, clock, server)
    assert post(receiver, body, {"DT-Asymmetric-Signature": token})[0] == 202


def test_cached_keys_outlive_a_key_server_outage(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server)})[0] == 202
    server.stop()
    clock.now += 2 * 3600  # the cache is stale: a refresh is tried, fails, the cache still serves
    other = event_body()
    assert post(receiver, other, {"DT-Asymmetric-Signature": asym(other, clock, server)})[0] == 202


def test_key_server_answering_garbage_is_503(make_receiver, clock, server):
    server.set_keys([])
    server._jwks = {"not": "a key set"}
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    assert post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server)})[0] == 503


# --- DT_SIGNATURE_MODE: every mode with neither, one or both headers ---------------------

GOOD_S, BAD_S, GOOD_A, BAD_A = "S", "s!", "A", "a!"


def headers_for(combo: tuple, body: bytes, clock, server) -> dict:
    headers = {"Content-Type": "application/json"}
    for part in combo:
        if part == GOOD_S:
            headers["X-Dt-Signature"] = sign(body, SECRET, iat=int(clock.now))
        elif part == BAD_S:
            headers["X-Dt-Signature"] = sign(body, "not-the-secret-0123456789abcdef0", iat=int(clock.now))
        elif part == GOOD_A:
            headers["DT-Asymmetric-Signature"] = asym(body, clock, server)
        elif part == BAD_A:
            headers["DT-Asymmetric-Signature"] = asym(body, clock, server, key=OTHER_KEY)
    return headers


# (mode, headers present) -> status, with a secret set and asymmetric verification possible.
MATRIX = {
    "secret": {(): 401, (GOOD_S,): 202, (GOOD_A,): 401, (GOOD_S, GOOD_A): 202,
               (BAD_S,): 401, (GOOD_S, BAD_A): 202, (BAD_S, GOOD_A): 401},
    "asymmetric": {(): 401, (GOOD_S,): 401, (GOOD_A,): 202, (GOOD_S, GOOD_A): 202,
                   (BAD_A,): 401, (BAD_S, GOOD_A): 202, (GOOD_S, BAD_A): 401},
    "either": {(): 401, (GOOD_S,): 202, (GOOD_A,): 202, (GOOD_S, GOOD_A): 202,
               (BAD_S,): 401, (BAD_A,): 401, (GOOD_S, BAD_A): 401, (BAD_S, GOOD_A): 401},
    "both": {(): 401, (GOOD_S,): 401, (GOOD_A,): 401, (GOOD_S, GOOD_A): 202,
             (BAD_S, GOOD_A): 401, (GOOD_S, BAD_A): 401},
}
CASES = [(mode, combo, status) for mode, row in MATRIX.items() for combo, status in row.items()]


@pytest.mark.parametrize(("mode", "combo", "status"), CASES, ids=[f"{m}-{'+'.join(c) or 'none'}" for m, c, _ in CASES])
def test_mode_with_secret_and_keys_configured(make_receiver, clock, server, queue, mode, combo, status):
    receiver = make_receiver(DT_SIGNATURE_MODE=mode)
    body = event_body()
    got, payload = post(receiver, body, headers_for(combo, body, clock, server))
    assert got == status, payload
    assert queue.depth() == (1 if status == 202 else 0)
    if status == 401:
        assert payload["error"] == "unauthorized"
    if mode == "secret":
        assert server.requests == 0  # the asymmetric header is never even looked at


# (mode, what is configured, headers) -> status when something is missing.
# "no-secret": DT_SIGNATURE_SECRET unset.  "no-asym": asymmetric verification impossible.
MISSING = [
    ("secret", "no-secret", (), 503), ("secret", "no-secret", (GOOD_S,), 503),
    ("secret", "no-secret", (GOOD_A,), 503),
    ("asymmetric", "no-asym", (), 503), ("asymmetric", "no-asym", (GOOD_A,), 503),
    ("asymmetric", "no-secret", (GOOD_A,), 202), ("asymmetric", "no-secret", (), 401),
    ("both", "no-secret", (GOOD_S, GOOD_A), 503), ("both", "no-asym", (GOOD_S, GOOD_A), 503),
    ("both", "no-asym", (), 503),
    ("either", "no-secret", (), 401), ("either", "no-secret", (GOOD_S,), 503),
    ("either", "no-secret", (GOOD_A,), 202), ("either", "no-secret", (GOOD_S, GOOD_A), 202),
    ("either", "no-secret", (BAD_S, GOOD_A), 202),  # unverifiable here: ignored
    ("either", "no-secret", (GOOD_S, BAD_A), 401),
    ("either", "no-asym", (), 401), ("either", "no-asym", (GOOD_S,), 202),
    ("either", "no-asym", (GOOD_A,), 503), ("either", "no-asym", (GOOD_S, BAD_A), 202),
    ("either", "no-asym", (BAD_S, GOOD_A), 401),
    ("either", "neither", (), 503), ("either", "neither", (GOOD_S,), 503),
    ("either", "neither", (GOOD_A,), 503), ("either", "neither", (GOOD_S, GOOD_A), 503),
]


@pytest.fixture(params=["cryptography-missing", "issuer-empty"])
def no_asym(request, monkeypatch):
    """The two ways asymmetric verification can be impossible: call it to make it so.
    Returns the Settings overrides it needs, and the setting the messages must name."""

    def disable() -> "tuple[dict, str]":
        if request.param == "cryptography-missing":
            import importlib.util

            real = importlib.util.find_spec
            monkeypatch.setattr(
                importlib.util, "find_spec", lambda name, *a: None if name == "cryptography" else real(name, *a)
            )
            return {}, "cryptography"
        return {"jwks_issuer": ""}, "DT_JWKS_ISSUER"

    return disable


@pytest.mark.parametrize(
    ("mode", "config", "combo", "status"), MISSING, ids=[f"{m}-{c}-{'+'.join(h) or 'none'}" for m, c, h, _ in MISSING]
)
def test_mode_with_something_missing(claim_store, queue, clock, server, no_asym, log_lines, mode, config, combo, status):
    overrides, asym_name = no_asym() if config in ("no-asym", "neither") else ({}, None)
    settings = Settings.from_env(
        {"DT_CLOCK_LEEWAY_S": "60", "DT_JWKS_ISSUER": server.issuer, "DT_SIGNATURE_MODE": mode,
         **({} if config in ("no-secret", "neither") else {"DT_SIGNATURE_SECRET": SECRET})},
        **overrides,
    )
    receiver = Receiver(settings, claim_store, queue, clock=clock)
    body = event_body()
    got, payload = post(receiver, body, headers_for(combo, body, clock, server))
    assert got == status, payload
    assert queue.depth() == (1 if status == 202 else 0)
    if status == 503:  # the reason and the log line name what to fix
        names = []
        if config in ("no-secret", "neither"):
            names.append("DT_SIGNATURE_SECRET")
        if asym_name:
            names.append(asym_name)
        line = log_lines()[-1]
        assert line["level"] == "error", line
        for name in names:
            assert name in payload["reason"] and name in line["message"], (payload, line)


def test_nothing_configured_is_an_error_at_start_naming_both_settings(claim_store, queue, clock, log_lines):
    Receiver(Settings(jwks_issuer=""), claim_store, queue, clock=clock)
    [line] = log_lines()
    assert line["level"] == "error"
    assert "DT_SIGNATURE_SECRET" in line["message"] and "DT_JWKS_ISSUER" in line["message"]


def test_default_mode_without_secret_warns_that_only_asymmetric_is_accepted(claim_store, queue, clock, log_lines):
    Receiver(Settings(), claim_store, queue, clock=clock)
    [line] = log_lines()
    assert line["level"] == "warning" and "DT-Asymmetric-Signature" in line["message"]


def test_allow_unsigned_is_ignored_in_asymmetric_mode(make_receiver, clock, server):
    receiver = make_receiver(secret=False, DT_SIGNATURE_MODE="asymmetric", DT_ALLOW_UNSIGNED="1")
    assert post(receiver, event_body(), {})[0] == 401


def test_allow_unsigned_without_secret_in_default_mode_accepts_unsigned(make_receiver, server):
    receiver = make_receiver(secret=False, DT_ALLOW_UNSIGNED="1")
    assert post(receiver, event_body(), {})[0] == 202
    assert server.requests == 0


# --- configuration ------------------------------------------------------------------------


def test_settings_defaults_and_parsing():
    s = Settings.from_env({})
    assert (s.signature_mode, s.jwks_issuer, s.organization_id, s.key_fetch_timeout_s) == (
        "either", "https://identity.disruptive-technologies.com/data-connector", None, 2.0
    )
    s = Settings.from_env({
        "DT_SIGNATURE_MODE": " Both ", "DT_JWKS_ISSUER": "https://issuer.example/dc/",
        "DT_ORGANIZATION_ID": " org1 ", "DT_KEY_FETCH_TIMEOUT_S": "1.5",
    })
    assert (s.signature_mode, s.jwks_issuer, s.organization_id, s.key_fetch_timeout_s) == (
        "both", "https://issuer.example/dc", "org1", 1.5
    )
    assert Settings.from_env({"DT_JWKS_ISSUER": "http://127.0.0.1:8080/x"}).jwks_issuer == "http://127.0.0.1:8080/x"
    assert Settings.from_env({"DT_JWKS_ISSUER": "http://localhost"}).jwks_issuer == "http://localhost"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DT_SIGNATURE_MODE", "hmac"),
        ("DT_JWKS_ISSUER", "http://identity.disruptive-technologies.com/data-connector"),
        ("DT_JWKS_ISSUER", "http://127.0.0.1@evil.example/"),
        ("DT_JWKS_ISSUER", "ftp://x"),
        ("DT_KEY_FETCH_TIMEOUT_S", "0"),
        ("DT_KEY_FETCH_TIMEOUT_S", "12"),
    ],
)
def test_bad_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_secret_only_deployments_never_import_the_asymmetric_module():
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, time\n"
        "from core.config import Settings, Secret\n"
        "from core.receiver import Receiver\n"
        "from core.http import Request, Headers\n"
        "from local_receiver.sqlite_store import Database, SQLiteClaimStore, SQLiteQueue\n"
        "from emulator.signing import sign\n"
        "from tests.dt import SECRET, event_body\n"
        "db = Database(':memory:')\n"
        "r = Receiver(Settings(secrets=(Secret(SECRET),)), SQLiteClaimStore(db), SQLiteQueue(db))\n"
        "b = event_body()\n"
        "assert r.handle(Request('POST', b, Headers({'X-Dt-Signature': sign(b, SECRET)}))).status == 202\n"
        "assert 'core.asymmetric' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- the emulator's side ------------------------------------------------------------------


def test_emulator_key_id_is_stable_and_the_jwk_round_trips(server):
    assert key_id(KEY) == key_id(public_key_pem(KEY)) != key_id(OTHER_KEY)
    jwk = public_jwk(KEY)
    assert jwk["kid"] == key_id(KEY) and jwk["kty"] == "EC" and jwk["crv"] == "P-256" and "d" not in jwk


def test_emulator_signs_with_a_loaded_key_object_too(make_receiver, clock, server):
    from emulator.jwks import load_private_key

    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    token = sign_asymmetric(body, load_private_key(KEY), KID, issuer=server.issuer, iat=int(clock.now))
    assert post(receiver, body, {"DT-Asymmetric-Signature": token})[0] == 202
    with pytest.raises(ValueError):
        load_private_key(public_key_pem(KEY))


def test_emulator_jwks_cli_generates_a_key(tmp_path):
    from emulator.jwks import main

    path = tmp_path / "key.pem"
    assert main(["--generate", str(path)]) == 0
    assert b"PRIVATE KEY" in path.read_bytes() and (path.stat().st_mode & 0o077) == 0
    with pytest.raises(SystemExit):
        main(["--generate", str(path)])  # never overwrites a key


def test_expired_at_exactly_exp_plus_leeway(make_receiver, clock, server):
    """RFC 7519 §4.1.4 ("on or after"), as on X-Dt-Signature: DT's tokens live 300 s."""
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    token = asym(body, clock, server, iat=int(clock.now) - 360)  # exp + 60 s leeway == now
    clock.now = float(int(clock.now))
    status, payload = post(receiver, body, {"DT-Asymmetric-Signature": token})
    assert status == 401 and payload["reason"] == "token has expired"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_time_claim_too_large_for_a_float_is_401(make_receiver, clock, server, claim):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    status, payload = post(receiver, body, {"DT-Asymmetric-Signature": asym(body, clock, server, **{claim: 10**400})})
    assert status == 401 and "out of range" in payload["reason"]


def test_critical_header_extensions_are_401(make_receiver, clock, server):
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    claims = asymmetric_claims(body, issuer=server.issuer, sub=ORG, iat=int(clock.now))
    for extension in ({"crit": ["b64"], "b64": True}, {"crit": ["b64"], "b64": False}):
        token = jwt.encode(claims, KEY, algorithm="ES256", headers={"kid": KID, **extension})
        assert post(receiver, body, {"DT-Asymmetric-Signature": token})[0] == 401


# --- on an event loop: admit never waits for the key server ------------------------------


def test_admit_without_fetching_raises_keys_needed_and_never_touches_the_network(make_receiver, clock, server):
    from core.receiver import Admitted
    from core.signature import KeysNeeded

    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    request = Request("POST", body, Headers({"DT-Asymmetric-Signature": asym(body, clock, server)}))
    with pytest.raises(KeysNeeded):
        receiver.admit(request, may_fetch_keys=False)
    assert server.requests == 0
    assert isinstance(receiver.admit(request), Admitted)  # in a thread, where waiting is fine
    assert server.jwks_requests == 1
    assert isinstance(receiver.admit(request, may_fetch_keys=False), Admitted)  # cached now
    # An unknown kid inside the refresh interval is answered from the cache, at once.
    forged = Request("POST", body, Headers({"DT-Asymmetric-Signature": asym(body, clock, server, kid="nope")}))
    assert receiver.admit(forged, may_fetch_keys=False).status == 401
    clock.now += 11  # past the interval: the same token would make a fetch
    with pytest.raises(KeysNeeded):
        receiver.admit(forged, may_fetch_keys=False)
    assert server.jwks_requests == 1


def test_admit_without_fetching_while_another_thread_fetches_raises_keys_needed(make_receiver, clock, server):
    import threading

    from core.signature import KeysNeeded

    server.delay_s = 3.0
    receiver = make_receiver(DT_SIGNATURE_MODE="asymmetric")
    body = event_body()
    request = Request("POST", body, Headers({"DT-Asymmetric-Signature": asym(body, clock, server)}))
    fetching = threading.Thread(target=receiver.admit, args=(request,))
    fetching.start()
    while server.requests == 0:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(KeysNeeded):
        receiver.admit(request, may_fetch_keys=False)
    assert time.monotonic() - started < 1.0  # did not wait for the fetch in flight (3 s)
    fetching.join()
