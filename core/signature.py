"""Verify DT's `X-Dt-Signature`: an HS256 JWT whose claims carry a checksum of the body.

PyJWT checks the token's structure and HMAC with the algorithm pinned to HS256, so
``alg: none``, HS512 and RS256 tokens are refused before any key is used. Time claims are
checked here rather than by PyJWT so the clock can be injected (tests, and the sample
request, which expired in 2022) and so `exp` can be required while `iat` gets a leeway
in both directions.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import warnings
from typing import Callable, Sequence

import jwt

from .config import Secret
from .http import Headers

SIGNATURE_HEADER = "x-dt-signature"

# DT lets users pick short secrets; PyJWT would warn on every request. We warn once,
# at start, in `core.app` instead.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

_DECODER = jwt.PyJWT(
    options={
        "verify_signature": True,
        "verify_exp": False,
        "verify_iat": False,
        "verify_nbf": False,
        "verify_aud": False,
        "verify_iss": False,
    }
)


class SignatureError(Exception):
    """The request is not provably from DT. `reason` is short, fixed text, safe to log
    and to return to the caller: it never contains the token or a secret."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _number(claims: dict, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SignatureError(f"token claim '{name}' is not a number")
    return float(value)


def _check_checksum(claims: dict, body: bytes) -> None:
    """Prefer SHA-256; accept SHA-1 only from tokens that predate the SHA-256 claim."""
    if "checksum_sha256" in claims:
        name, expected = "checksum_sha256", hashlib.sha256(body).hexdigest()
    elif "checksum" in claims:
        name, expected = "checksum", hashlib.sha1(body).hexdigest()
    else:
        raise SignatureError("token has no body checksum")
    actual = claims[name]
    if not isinstance(actual, str) or not hmac.compare_digest(
        actual.lower().encode("ascii", "replace"), expected.encode("ascii")
    ):
        raise SignatureError("body checksum does not match the token")


class SecretVerifier:
    """Checks a token against the current secret and, during rotation, the previous one."""

    def __init__(
        self,
        secrets: Sequence[Secret],
        leeway_s: float,
        clock: Callable[[], float] = time.time,
    ):
        if not secrets:
            raise ValueError("SecretVerifier needs at least one secret")
        self._keys = [s.reveal().encode("utf-8") for s in secrets]
        self._leeway = leeway_s
        self._clock = clock

    def verify(self, token: str, body: bytes) -> dict:
        """The token's claims, or `SignatureError`."""
        claims = self._decode(token)
        now = self._clock()
        exp = _number(claims, "exp")
        if exp is None:
            raise SignatureError("token has no expiry (exp)")
        if now > exp + self._leeway:
            raise SignatureError("token has expired")
        for name in ("iat", "nbf"):
            value = _number(claims, name)
            if value is not None and value > now + self._leeway:
                raise SignatureError(f"token is not valid yet ({name})")
        _check_checksum(claims, body)
        return claims

    def _decode(self, token: str) -> dict:
        for key in self._keys:
            try:
                claims = _DECODER.decode(token, key, algorithms=["HS256"])
            except jwt.InvalidSignatureError:
                continue  # maybe signed with the other secret during rotation
            except jwt.InvalidAlgorithmError:
                raise SignatureError("token algorithm is not HS256") from None
            except (jwt.PyJWTError, ValueError, TypeError):
                raise SignatureError("token is malformed") from None
            if not isinstance(claims, dict):
                raise SignatureError("token is malformed")
            return claims
        raise SignatureError("token signature is invalid")


def signature_token(headers: Headers) -> str:
    """The single `X-Dt-Signature` value. Two values are refused: which one would DT mean?"""
    values = headers.get_all(SIGNATURE_HEADER)
    if not values:
        raise SignatureError("missing X-Dt-Signature header")
    if len(values) > 1:
        raise SignatureError("more than one X-Dt-Signature header")
    token = values[0].strip()
    if "," in token:  # how some platforms join a repeated header
        raise SignatureError("more than one X-Dt-Signature header")
    if not token:
        raise SignatureError("missing X-Dt-Signature header")
    return token
