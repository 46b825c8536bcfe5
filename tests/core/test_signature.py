"""X-Dt-Signature verification, including the real signed request from DT's fixtures."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest

from core.config import Secret
from core.http import Headers
from core.signature import SecretVerifier, SignatureError, signature_token
from emulator.signing import sign
from tests.dt import signed_sample

SECRET = "unit-test-secret-0123456789abcdef0123"
BODY = b'{"event":{"eventId":"e1"}}'


def verifier(*secrets: str, now: float | None = None, leeway: float = 60.0) -> SecretVerifier:
    clock = (lambda: now) if now is not None else time.time
    return SecretVerifier([Secret(s) for s in (secrets or (SECRET,))], leeway, clock)


def reason_of(v: SecretVerifier, token: str, body: bytes = BODY) -> str:
    with pytest.raises(SignatureError) as err:
        v.verify(token, body)
    return err.value.reason


def test_real_dt_sample_verifies_inside_its_validity_window():
    sample = signed_sample()
    claims = sample["jwt_claims"]
    v = verifier(sample["secret"], now=claims["iat"] + 10)
    got = v.verify(sample["headers"]["X-Dt-Signature"], sample["body"].encode())
    assert got["checksum_sha256"] == claims["checksum_sha256"]


def test_real_dt_sample_is_expired_today():
    sample = signed_sample()
    v = verifier(sample["secret"])
    assert reason_of(v, sample["headers"]["X-Dt-Signature"], sample["body"].encode()) == "token has expired"


def test_real_dt_sample_with_one_byte_changed_fails():
    sample = signed_sample()
    v = verifier(sample["secret"], now=sample["jwt_claims"]["iat"] + 10)
    body = sample["body"].replace('"touch"}', '"touch" }').encode()
    assert "checksum" in reason_of(v, sample["headers"]["X-Dt-Signature"], body)


def test_token_signed_now_verifies():
    assert verifier().verify(sign(BODY, SECRET), BODY)["iat"] <= time.time()


@pytest.mark.parametrize("alg", ["HS512", "HS384"])
def test_other_hmac_algorithms_are_refused(alg):
    token = jwt.encode({"checksum_sha256": hashlib.sha256(BODY).hexdigest(), "exp": time.time() + 60}, SECRET, algorithm=alg)
    assert reason_of(verifier(), token) == "token algorithm is not HS256"


def test_alg_none_is_refused():
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
    claims = {"checksum_sha256": hashlib.sha256(BODY).hexdigest(), "exp": int(time.time()) + 60}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    token = (header + b"." + payload + b".").decode()
    assert reason_of(verifier(), token) == "token algorithm is not HS256"


def test_rs256_token_is_refused():
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"checksum_sha256": hashlib.sha256(BODY).hexdigest(), "exp": time.time() + 60}, key, algorithm="RS256")
    assert reason_of(verifier(), token) == "token algorithm is not HS256"


def test_token_without_exp_is_refused():
    assert reason_of(verifier(), sign(BODY, SECRET, exp=None)) == "token has no expiry (exp)"


def test_non_numeric_exp_is_refused():
    assert "not a number" in reason_of(verifier(), sign(BODY, SECRET, exp="tomorrow"))


@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_non_finite_time_claims_are_refused(claim):
    # NaN compares false with everything: an `exp` of NaN would never expire.
    for value in (float("nan"), float("inf")):
        assert "not a number" in reason_of(verifier(), sign(BODY, SECRET, **{claim: value}))


def test_future_iat_beyond_leeway_is_refused_and_within_leeway_accepted():
    now = time.time()
    v = verifier(now=now, leeway=60)
    assert reason_of(v, sign(BODY, SECRET, iat=int(now) + 120)) == "token is not valid yet (iat)"
    v.verify(sign(BODY, SECRET, iat=int(now) + 30), BODY)  # a sender clock 30 s fast is fine


def test_expiry_gets_the_leeway():
    now = time.time()
    token = sign(BODY, SECRET, iat=int(now) - 3600 - 30)  # exp 30 s ago
    verifier(now=now, leeway=60).verify(token, BODY)
    assert reason_of(verifier(now=now, leeway=10), token) == "token has expired"


def test_wrong_secret_is_refused():
    assert reason_of(verifier(), sign(BODY, "another-secret-0123456789abcdef012")) == "token signature is invalid"


def test_previous_secret_is_accepted_during_rotation():
    v = verifier("new-secret-0123456789abcdef0123456", SECRET)
    v.verify(sign(BODY, SECRET), BODY)
    v.verify(sign(BODY, "new-secret-0123456789abcdef0123456"), BODY)


def test_sha256_checksum_is_preferred_over_sha1():
    # The SHA-1 claim matches but the SHA-256 one does not: refused.
    token = sign(BODY, SECRET, checksum_sha256=hashlib.sha256(b"other").hexdigest())
    assert reason_of(verifier(), token) == "body checksum does not match the token"


def test_sha1_checksum_is_accepted_only_when_sha256_is_absent():
    verifier().verify(sign(BODY, SECRET, checksum_sha256=None), BODY)
    bad = sign(BODY, SECRET, checksum_sha256=None, checksum=hashlib.sha1(b"other").hexdigest())
    assert reason_of(verifier(), bad) == "body checksum does not match the token"


def test_token_without_any_checksum_is_refused():
    assert reason_of(verifier(), sign(BODY, SECRET, checksum=None, checksum_sha256=None)) == "token has no body checksum"


def test_checksum_of_wrong_type_is_refused():
    assert reason_of(verifier(), sign(BODY, SECRET, checksum_sha256=12345)) == "body checksum does not match the token"


def test_uppercase_hex_checksum_is_accepted():
    verifier().verify(sign(BODY, SECRET, checksum_sha256=hashlib.sha256(BODY).hexdigest().upper()), BODY)


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c", "ééé.x.y", "x" * 10_000, "eyJhbGciOiJIUzI1NiJ9.e30.a", "eyJhbGciOiJIUzI1NiJ9.a.sig", "W10.e30.sig"],
    ids=["empty", "two-parts", "not-base64-json", "non-ascii", "huge", "bad-signature-length", "bad-payload", "header-not-object"],
)
def test_garbage_tokens_are_refused_not_crashing(token):
    with pytest.raises(SignatureError):
        verifier().verify(token, BODY)


def test_reasons_never_contain_the_token_or_secret():
    token = sign(BODY, "another-secret-0123456789abcdef012")
    reason = reason_of(verifier(), token)
    assert token not in reason and SECRET not in reason


def test_header_lookup_is_case_insensitive_and_refuses_duplicates():
    assert signature_token(Headers({"x-dt-signature": "abc"})) == "abc"
    assert signature_token(Headers({"X-DT-SIGNATURE": "abc"})) == "abc"
    with pytest.raises(SignatureError, match="more than one"):
        signature_token(Headers([("X-Dt-Signature", "a"), ("x-dt-signature", "b")]))
    with pytest.raises(SignatureError, match="more than one"):
        signature_token(Headers({"X-Dt-Signature": "a, b"}))  # joined by a proxy
    with pytest.raises(SignatureError, match="missing"):
        signature_token(Headers({"Authorization": "x"}))
    with pytest.raises(SignatureError, match="missing"):
        signature_token(Headers({"X-Dt-Signature": "  "}))


# --- edge cases replayed from DT's own test vectors and found by fuzzing (issue 14) ------


def test_token_is_expired_at_exactly_exp_plus_leeway():
    """RFC 7519 §4.1.4: expired "on or after" exp; PyJWT and DT's verifier agree."""
    now = 1_800_000_000
    token = sign(BODY, SECRET, iat=now - 3600)  # exp == now
    assert reason_of(verifier(now=now + 60, leeway=60), token) == "token has expired"
    verifier(now=now + 59.999, leeway=60).verify(token, BODY)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_time_claim_too_large_for_a_float_is_refused_not_an_error(claim):
    """10**400 is a valid JSON integer that float() cannot hold: OverflowError was a 503."""
    assert "out of range" in reason_of(verifier(), sign(BODY, SECRET, **{claim: 10**400}))


def test_token_with_critical_header_extensions_is_refused():
    """RFC 7515 §4.1.11: a recipient that does not understand a `crit` extension must
    reject the token. With `b64: false` the signature covers the raw payload."""
    claims = jwt.decode(sign(BODY, SECRET), options={"verify_signature": False})
    for extension in ({"crit": ["b64"], "b64": True}, {"crit": ["urn:example:ext"], "urn:example:ext": 1}):
        token = jwt.encode(claims, SECRET, algorithm="HS256", headers=extension)
        v = verifier()
        # twice: the header is not remembered as "HS256, fine" for the next token either
        assert reason_of(v, token) == reason_of(v, token) == "token has critical header extensions"
    raw_payload = jwt.encode(claims, SECRET, algorithm="HS256", headers={"crit": ["b64"], "b64": False})
    assert reason_of(verifier(), raw_payload) == "token is malformed"  # not even base64url
