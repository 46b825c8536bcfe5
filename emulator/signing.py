"""Sign a request body exactly as DT Cloud does: `X-Dt-Signature` (HS256 JWT with the
connector's secret) and `DT-Asymmetric-Signature` (ES256 JWT with DT's key, `sign_asymmetric`).

Claims: `checksum` (SHA-1 hex of the body), `checksum_sha256` (SHA-256 hex), `iat`,
`exp` = iat + 3600, `jti` (built by `dtcloud.signing`, which backfill uses). This module adds
what only a test double needs: forged claims and DT's own asymmetric key.
"""

from __future__ import annotations

import hashlib
import time

import jwt

from dtcloud.signing import TOKEN_LIFETIME_S, dt_claims  # noqa: F401  (the product's claims, re-used)


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


# --- DT-Asymmetric-Signature (ES256, DT's own key) --------------------------------------

ASYMMETRIC_HEADER = "DT-Asymmetric-Signature"
ASYMMETRIC_TOKEN_LIFETIME_S = 300
DT_ISSUER = "https://identity.disruptive-technologies.com/data-connector"


def asymmetric_claims(body: bytes, *, issuer: str = DT_ISSUER, sub: str | None = None, iat: int | None = None) -> dict:
    iat = int(time.time()) if iat is None else int(iat)
    claims = {
        "checksum_sha256": hashlib.sha256(body).hexdigest(),
        "iat": iat,
        "exp": iat + ASYMMETRIC_TOKEN_LIFETIME_S,
        "iss": issuer,
    }
    if sub is not None:
        claims["sub"] = sub
    return claims


def sign_asymmetric(
    body: bytes,
    private_key_pem,
    kid: str,
    issuer: str = DT_ISSUER,
    sub: str | None = None,
    iat: int | None = None,
    **claim_overrides,
) -> str:
    """The `DT-Asymmetric-Signature` value for `body`: an ES256 JWT with header `kid`, signed
    with the EC P-256 private key `private_key_pem` (PEM bytes or str, or an already loaded
    `cryptography` key object, cheaper when signing many; see `emulator.jwks` to make one
    and to serve its public half). `sub` is the organization id. `claim_overrides` as in `sign`.
    Needs `cryptography` (the `asymmetric` extra)."""
    claims = asymmetric_claims(body, issuer=issuer, sub=sub, iat=iat)
    for name, value in claim_overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    key = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
