"""`X-Dt-Signature` for a body we deliver ourselves (`dtconnector backfill`, `send`).

Why product code signs: backfill re-delivers events from DT's history to a deployed receiver,
which accepts only bodies signed with the connector's secret. The token is DT's (README's
"Signatures"; DT's docs: "Receiving Events"): an HS256 JWT with the body's SHA-1 and SHA-256
(`checksum`, `checksum_sha256`), `iat`, `exp` = iat + 1 h and a fresh `jti`; each attempt
is signed afresh, as DT does.
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


def sign(body: bytes, secret: str, iat: int | None = None) -> str:
    """The `X-Dt-Signature` value for `body`."""
    return jwt.encode(dt_claims(body, iat), secret, algorithm="HS256")
