"""Verify DT's `X-Dt-Signature` (an HS256 JWT whose claims carry a checksum of the body),
and decide per `DT_SIGNATURE_MODE` which of it and `DT-Asymmetric-Signature` (ES256,
checked by `core.asymmetric`) a request needs: `SignaturePolicy`.

PyJWT checks the token's structure and HMAC with the algorithm pinned to HS256, so
``alg: none``, HS512 and RS256 tokens are refused before any key is used. Time claims are
checked here rather than by PyJWT so the clock can be injected (tests, and the sample
request, which expired in 2022) and so `exp` can be required while `iat` gets a leeway
in both directions.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import importlib.util
import json
import logging
import re
import threading
import time
import warnings
from typing import Callable, Sequence

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode

from .config import Secret, Settings
from .http import Headers
from .tokens import (  # noqa: F401  (re-exported: the errors a signature check raises)
    CannotVerify,
    KeysNeeded,
    KeysUnavailable,
    NotConfigured,
    SignatureError,
    check_times,
)

SIGNATURE_HEADER = "x-dt-signature"

# DT lets users pick short secrets; PyJWT would warn on every request. We warn once,
# at start (SignaturePolicy.startup_messages) instead.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

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


# A compact JWS: three base64url segments. Checked with one C-level match instead of
# PyJWT's per-character validation; the segments are then decoded by PyJWT's helper.
_COMPACT_JWS = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")


def _json_segment(segment: str) -> dict:
    try:
        value = json.loads(base64url_decode(segment))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise SignatureError("token is malformed") from None
    if not isinstance(value, dict):
        raise SignatureError("token is malformed")
    return value


class SecretVerifier:
    """Checks a token against the current secret and, during rotation, the previous one.

    Built on PyJWT's own HS256 algorithm object, with each key prepared once rather than
    on every request as `jwt.decode` does: per event this is about half of `jwt.decode`'s
    cost (see BENCHMARKS.md). The header must say ``alg: HS256``; ``none``, HS384/512 and
    RS256 are refused before any key is used.
    """

    def __init__(
        self,
        secrets: Sequence[Secret],
        leeway_s: float,
        clock: Callable[[], float] = time.time,
    ):
        if not secrets:
            raise ValueError("SecretVerifier needs at least one secret")
        self._hs256 = HMACAlgorithm(HMACAlgorithm.SHA256)
        self._keys = [self._hs256.prepare_key(s.reveal().encode("utf-8")) for s in secrets]
        self._leeway = leeway_s
        self._clock = clock
        self._hs256_headers: set[str] = set()  # header segments already seen to say HS256

    def verify(self, token: str, body: bytes) -> dict:
        """The token's claims, or `SignatureError`."""
        claims = self._decode(token)
        check_times(claims, self._clock(), self._leeway)
        _check_checksum(claims, body)
        return claims

    def _decode(self, token: str) -> dict:
        m = _COMPACT_JWS.fullmatch(token)
        if m is None:
            raise SignatureError("token is malformed")
        header_b64, payload_b64, signature_b64 = m.groups()
        if header_b64 not in self._hs256_headers:
            header = _json_segment(header_b64)
            if header.get("alg") != "HS256":
                raise SignatureError("token algorithm is not HS256")
            if "crit" in header:  # RFC 7515 §4.1.11: extensions we don't implement (b64: false...)
                raise SignatureError("token has critical header extensions")
            if len(self._hs256_headers) < 8:  # DT sends one header, byte for byte, every time
                self._hs256_headers.add(header_b64)
        try:
            signature = base64url_decode(signature_b64)
        except (ValueError, binascii.Error):
            raise SignatureError("token is malformed") from None
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        if not any(self._hs256.verify(signing_input, key, signature) for key in self._keys):
            raise SignatureError("token signature is invalid")
        return _json_segment(payload_b64)


def signature_token(headers: Headers, name: str = SIGNATURE_HEADER, label: str = "X-Dt-Signature") -> str:
    """The single value of header `name`. Two values are refused: which one would DT mean?"""
    values = headers.get_all(name)
    if not values:
        raise SignatureError(f"missing {label} header")
    if len(values) > 1:
        raise SignatureError(f"more than one {label} header")
    token = values[0].strip()
    if "," in token:  # how some platforms join a repeated header
        raise SignatureError(f"more than one {label} header")
    if not token:
        raise SignatureError(f"missing {label} header")
    return token


# --- DT-Asymmetric-Signature and the policy choosing between the two headers -----------

ASYMMETRIC_HEADER = "dt-asymmetric-signature"
ASYMMETRIC_LABEL = "DT-Asymmetric-Signature"


def asymmetric_missing(settings: Settings) -> str | None:
    """Why this deployment cannot verify `DT-Asymmetric-Signature`, or None when it can.
    Checks for `cryptography` without importing it (cold starts of secret-only deployments)."""
    if not settings.jwks_issuer:
        return "DT_JWKS_ISSUER is not set"
    if importlib.util.find_spec("cryptography") is None:
        return "the 'cryptography' package is not installed (pip install 'dtconnector[asymmetric]')"
    return None


class SignaturePolicy:
    """Applies `DT_SIGNATURE_MODE` to a request's headers. `check` returns when the request
    is proven to be from DT, raises `SignatureError` (answer 401) when a required header is
    missing or a header present is invalid, and `CannotVerify` (answer 503) when this
    deployment lacks what the check needs or DT's keys cannot be fetched.

    - ``secret``: X-Dt-Signature must be present and valid. DT-Asymmetric-Signature is
      ignored. No secret configured: 503 for every POST.
    - ``asymmetric``: DT-Asymmetric-Signature must be present and valid. X-Dt-Signature is
      ignored (even with a secret set). Asymmetric verification impossible: 503 every POST.
    - ``both``: both headers must be present and valid (secret checked first, so a bad one
      costs no key fetch). Either kind of verification impossible: 503 for every POST.
    - ``either`` (default): every header this deployment can verify must be valid, and at
      least one must be present. A header the deployment cannot verify (no secret set, or
      no `cryptography`) is ignored when the other header is checked; a request carrying
      only such a header gets 503 naming the missing setting. Neither header: 401. Neither
      kind of verification possible: 503 for every POST.

    ``DT_ALLOW_UNSIGNED=1`` with no secret set, in modes ``secret`` and ``either``: nothing
    is verified (local testing only, as before this policy existed). Ignored otherwise.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.mode = settings.signature_mode
        self._clock = clock
        self._secret = SecretVerifier(settings.secrets, settings.leeway_s, clock) if settings.secrets else None
        self._asym_missing = asymmetric_missing(settings)
        self._asym = None  # built on first use: core.asymmetric imports urllib and cryptography
        self._asym_lock = threading.Lock()
        self.unsigned_allowed = (
            settings.allow_unsigned and not settings.secrets and self.mode in ("secret", "either")
        )

    # -- what the receiver calls -----------------------------------------------------
    def check(self, headers: Headers, body: bytes, *, may_fetch_keys: bool = True) -> None:
        """See the class doc. ``may_fetch_keys=False``: raise `KeysNeeded` rather than wait
        for DT's key server (the only network call a check can make)."""
        if self.unsigned_allowed:
            return
        mode = self.mode
        if mode == "secret":
            self._need_secret()
            self._secret.verify(signature_token(headers), body)
        elif mode == "asymmetric":
            self._need_asymmetric()
            self.asymmetric().verify(self._asym_token(headers), body, may_fetch=may_fetch_keys)
        elif mode == "both":
            self._need_secret()
            self._need_asymmetric()
            secret_token, asym_token = signature_token(headers), self._asym_token(headers)
            self._secret.verify(secret_token, body)
            self.asymmetric().verify(asym_token, body, may_fetch=may_fetch_keys)
        else:  # either
            if self._secret is None and self._asym_missing:
                raise self._not_configured(
                    "DT_SIGNATURE_SECRET is not set and asymmetric verification is unavailable "
                    f"({self._asym_missing})"
                )
            has_secret, has_asym = SIGNATURE_HEADER in headers, ASYMMETRIC_HEADER in headers
            check_secret = has_secret and self._secret is not None
            check_asym = has_asym and self._asym_missing is None
            if not (check_secret or check_asym):
                if has_secret:
                    self._need_secret()
                if has_asym:
                    self._need_asymmetric()
                raise SignatureError(f"missing X-Dt-Signature or {ASYMMETRIC_LABEL} header")
            if check_secret:
                self._secret.verify(signature_token(headers), body)
            if check_asym:
                self.asymmetric().verify(self._asym_token(headers), body, may_fetch=may_fetch_keys)

    def startup_messages(self) -> list[tuple[int, str]]:
        """(level, text) pairs worth logging once when the receiver starts."""
        s, out = self.settings, []
        if s.secrets and self.mode != "asymmetric" and any(len(x.reveal().encode()) < 32 for x in s.secrets):
            out.append((logging.WARNING, "a signature secret is shorter than 32 bytes; use a longer one"))
        if s.secrets and self.mode == "asymmetric":
            out.append((logging.WARNING, "DT_SIGNATURE_SECRET is ignored because DT_SIGNATURE_MODE=asymmetric"))
        if s.organization_id and self.mode == "secret":
            out.append((logging.WARNING, "DT_ORGANIZATION_ID is ignored: only DT-Asymmetric-Signature carries it"))
        if s.allow_unsigned and not self.unsigned_allowed:
            why = "a signature secret is set" if s.secrets else f"DT_SIGNATURE_MODE={self.mode}"
            out.append((logging.WARNING, f"DT_ALLOW_UNSIGNED is ignored because {why}"))
        if self.unsigned_allowed:
            out.append((
                logging.WARNING,
                "DT_ALLOW_UNSIGNED=1: accepting UNSIGNED requests. For local testing only; "
                "anyone who can reach this URL can inject events",
            ))
            return out
        missing = []
        if self.mode in ("secret", "both") and self._secret is None:
            missing.append("DT_SIGNATURE_SECRET is not set")
        if self.mode in ("asymmetric", "both") and self._asym_missing:
            missing.append(f"asymmetric verification is unavailable: {self._asym_missing}")
        if self.mode == "either" and self._secret is None and self._asym_missing:
            missing.append(
                f"DT_SIGNATURE_SECRET is not set and asymmetric verification is unavailable: {self._asym_missing}"
            )
        for text in missing:
            out.append((logging.ERROR, f"{text}: every POST will be answered 503 until it is fixed"))
        if self.mode == "either" and not missing and self._secret is None:
            out.append((
                logging.WARNING,
                f"DT_SIGNATURE_SECRET is not set: only requests carrying {ASYMMETRIC_LABEL} are accepted "
                "(one carrying only X-Dt-Signature is answered 503)",
            ))
        return out

    def asymmetric(self):
        """The `core.asymmetric.AsymmetricVerifier`, built (and its module imported) once."""
        if self._asym is None:
            with self._asym_lock:
                if self._asym is None:
                    from .asymmetric import AsymmetricVerifier

                    s = self.settings
                    self._asym = AsymmetricVerifier(
                        issuer=s.jwks_issuer,
                        leeway_s=s.leeway_s,
                        organization_id=s.organization_id,
                        fetch_timeout_s=s.key_fetch_timeout_s,
                        clock=self._clock,
                    )
        return self._asym

    # -- helpers ---------------------------------------------------------------------
    @staticmethod
    def _asym_token(headers: Headers) -> str:
        return signature_token(headers, ASYMMETRIC_HEADER, ASYMMETRIC_LABEL)

    def _need_secret(self) -> None:
        if self._secret is None:
            raise NotConfigured(
                "receiver is not configured (DT_SIGNATURE_SECRET is not set)",
                "no signature secret configured: set DT_SIGNATURE_SECRET "
                + (
                    "(or DT_ALLOW_UNSIGNED=1 for local testing only)"
                    if self.mode == "secret"
                    else f"(DT_SIGNATURE_MODE={self.mode})"
                )
                + "; answering 503 so DT retries",
            )

    def _need_asymmetric(self) -> None:
        if self._asym_missing:
            raise self._not_configured(f"cannot verify {ASYMMETRIC_LABEL}: {self._asym_missing}")

    def _not_configured(self, text: str) -> NotConfigured:
        return NotConfigured(
            f"receiver is not configured ({text})",
            f"{text} (DT_SIGNATURE_MODE={self.mode}); answering 503 so DT retries",
        )
