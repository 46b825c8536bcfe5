"""Sign a request body exactly as DT Cloud does (`X-Dt-Signature`, HS256 JWT).

Claims: `checksum` (SHA-1 hex of the body), `checksum_sha256` (SHA-256 hex), `iat`,
`exp` = iat + 3600, `jti`. Used by the emulator, the tests and `make run`'s example.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import warnings

import jwt

warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

TOKEN_LIFETIME_S = 3600


def dt_claims(body: bytes, iat: int | None = None, *, sha256: bool = True) -> dict:
    iat = int(time.time()) if iat is None else int(iat)
    claims = {
        "checksum": hashlib.sha1(body).hexdigest(),
        "exp": iat + TOKEN_LIFETIME_S,
        "iat": iat,
        "jti": secrets.token_hex(10),
    }
    if sha256:  # tokens from before about February 2022 lack it
        claims["checksum_sha256"] = hashlib.sha256(body).hexdigest()
    return claims


def sign(body: bytes, secret: str, iat: int | None = None, **claim_overrides) -> str:
    """The `X-Dt-Signature` value for `body`. `claim_overrides` replace or, with value
    None, remove claims (tests use this to forge broken tokens)."""
    claims = dt_claims(body, iat)
    for name, value in claim_overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm="HS256")
