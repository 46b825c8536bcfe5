"""What DT's two signature headers share: the errors a check raises (401 or 503, or
`KeysNeeded` for an event loop) and the time-claim rules.

No PyJWT here: an ASGI front end imports `KeysNeeded` at start without paying for PyJWT and
`cryptography` before the first request (cold starts).

A leaf module: `core.signature` (X-Dt-Signature, HS256, and the policy over both headers)
and `core.asymmetric` (DT-Asymmetric-Signature, ES256) both import it, and neither needs
the other to do so.
"""

from __future__ import annotations

import math

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
    try:
        number = float(value)  # an int past float's range (10**400) overflows here
    except OverflowError:
        raise SignatureError(f"token claim '{name}' is out of range") from None
    if not math.isfinite(number):
        raise SignatureError(f"token claim '{name}' is not a number")  # NaN would pass every comparison
    return number


def check_times(claims: dict, now: float, leeway_s: float) -> None:
    """`exp` is required; `iat` and `nbf`, when present, must not be in the future. Both
    directions get `leeway_s` of clock skew. A token is expired from the instant
    ``exp + leeway`` on (RFC 7519 §4.1.4: "on or after"; PyJWT and DT agree)."""
    exp = _number(claims, "exp")
    if exp is None:
        raise SignatureError("token has no expiry (exp)")
    if now >= exp + leeway_s:
        raise SignatureError("token has expired")
    for name in ("iat", "nbf"):
        value = _number(claims, name)
        if value is not None and value > now + leeway_s:
            raise SignatureError(f"token is not valid yet ({name})")


class CannotVerify(Exception):
    """The request may well be from DT, but this receiver cannot check it right now: answer
    503 so DT retries. `reason` goes to the caller; `log_message` names what to fix."""

    def __init__(self, reason: str, log_message: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.log_message = log_message or reason


class KeysNeeded(Exception):
    """Checking this request needs DT's signing keys fetched (or a fetch in progress
    finished), and the caller asked not to block (``may_fetch_keys=False``: an event loop).
    Not an answer: the caller checks again in a thread, where waiting is harmless."""


class NotConfigured(CannotVerify):
    """A setting (or an optional package) the request's signature needs is missing."""


class KeysUnavailable(CannotVerify):
    """DT's signing keys could not be fetched (key server unreachable, slow or broken)."""
