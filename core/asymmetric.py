"""Verify DT's `DT-Asymmetric-Signature`: an ES256 JWT signed with DT's own key.

Claims: `checksum_sha256` (SHA-256 hex of the raw body), `iat`, `exp` (iat + 300), `iss`
(DT's issuer URL) and `sub` (the organisation id). The public keys are those of the
issuer's OpenID discovery document (``<issuer>/.well-known/openid-configuration``), at its
``jwks_uri``; the token's `kid` header selects one.

Key handling, made for serverless containers that live for many warm invocations:

- The key set is fetched on the first request that needs it (never at start, never at
  import), then cached in the `AsymmetricVerifier`, which the receiver keeps for the
  container's life. After `max_age_s` it is refreshed; if that refresh fails, the cached
  keys go on being used until a refresh succeeds.
- A token whose `kid` is not in the cache triggers one refresh (DT rotated its key). At
  most one fetch per `min_refresh_interval_s`, whatever the outcome, so a flood of tokens
  with random `kid`s cannot hammer the key server: inside that interval an unknown `kid`
  is simply an invalid token (401; DT retries every non-2xx, so a genuine rotation costs
  one retry at worst).
- Each fetch (discovery document + key set) runs under one hard deadline,
  `fetch_timeout_s` (default 2 s), DNS lookups included, so a slow key server cannot eat
  DT's 10 s answer budget. Unreachable, slow, or answering garbage: `KeysUnavailable`,
  which the receiver answers 503 (DT retries), never 401: the request may be genuine.

The algorithm is pinned to ES256 before any key is looked up, so HS256 (e.g. signed with
the public key as an HMAC secret) and ``alg: none`` tokens are refused without a fetch.
Only EC P-256 signing keys of the set are used. Fetching uses urllib (no new dependency);
`cryptography` (the ``asymmetric`` extra) is needed to use the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

import jwt

from .config import check_issuer
from .logs import event_log
from .tokens import KeysNeeded, KeysUnavailable, NotConfigured, SignatureError, check_times

#: Structure and signature only; time claims are checked by `check_times` (injectable clock,
#: `exp` required, leeway both ways), issuer and audience by each verifier.
DECODER = jwt.PyJWT(
    options={
        "verify_signature": True,
        "verify_exp": False,
        "verify_iat": False,
        "verify_nbf": False,
        "verify_aud": False,
        "verify_iss": False,
    }
)

ALGORITHM = "ES256"
DISCOVERY_PATH = "/.well-known/openid-configuration"
DEFAULT_MIN_REFRESH_INTERVAL_S = 10.0
DEFAULT_MAX_AGE_S = 3600.0
MAX_DOCUMENT_BYTES = 512 * 1024


class KeySet:
    """DT's public signing keys, fetched from the issuer and cached (see the module doc).
    Thread-safe: one fetch at a time; other threads use the cache meanwhile."""

    def __init__(
        self,
        issuer: str,
        fetch_timeout_s: float,
        clock: Callable[[], float] = time.time,
        min_refresh_interval_s: float = DEFAULT_MIN_REFRESH_INTERVAL_S,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ):
        self.issuer = check_issuer(issuer)
        self.fetch_timeout_s = fetch_timeout_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._jwks_uri: str | None = None
        self.fetches = 0  # attempts, for tests and metrics

    def key(self, kid: str, may_fetch: bool = True) -> "jwt.PyJWK | None":
        """The key for `kid`, None if the issuer does not publish it, or `KeysUnavailable`.

        ``may_fetch=False``: never wait on the network or on another thread's fetch; raise
        `KeysNeeded` where the answer depends on one (an event loop then asks again from a
        thread), and otherwise answer from the cache exactly as a fetching call would."""
        keys = self._keys
        if keys is not None and kid in keys and not self._stale():
            return keys[kid]
        if not may_fetch:
            if not self._lock.acquire(blocking=False):  # another thread is fetching
                raise KeysNeeded(kid)
            try:
                if self._would_fetch():
                    raise KeysNeeded(kid)
                return self._key_locked(kid)  # inside the refresh interval: from the cache
            finally:
                self._lock.release()
        if not self._lock.acquire(timeout=self.fetch_timeout_s):  # another thread is fetching
            if keys is not None:
                return keys.get(kid)
            raise KeysUnavailable("signing keys are being fetched; retry later")
        try:
            return self._key_locked(kid)
        finally:
            self._lock.release()

    def _stale(self) -> bool:
        return self._clock() - self._fetched_at >= self.max_age_s

    def _would_fetch(self) -> bool:
        """`_key_locked` would go to the network now (outside the refresh interval)."""
        last = self._last_attempt
        return last is None or self._clock() - last >= self.min_refresh_interval_s

    def _key_locked(self, kid: str) -> "jwt.PyJWK | None":
        keys, now = self._keys, self._clock()
        if keys is not None and kid in keys and not self._stale():
            return keys[kid]  # another thread refreshed while we waited
        if self._last_attempt is not None and now - self._last_attempt < self.min_refresh_interval_s:
            if keys is not None and (kid in keys or self._last_error is None):
                return keys.get(kid)  # stale but usable, or unknown right after a good fetch
            raise KeysUnavailable(
                "signing keys unavailable; retry later",
                f"not fetching DT's signing keys again so soon after: {self._last_error}",
            )
        self._last_attempt = now
        self.fetches += 1
        try:
            fresh = _with_deadline(self._fetch, self.fetch_timeout_s)
        except KeysUnavailable as exc:
            self._last_error = exc.log_message
            self._jwks_uri = None  # rediscover next time: the document may have moved
            if keys is not None and kid in keys:
                event_log(logging.WARNING, "using cached signing keys: refresh failed", error=exc.log_message)
                return keys[kid]
            raise
        self._keys, self._fetched_at, self._last_error = fresh, now, None
        event_log(logging.INFO, "fetched DT's signing keys", kids=sorted(fresh))
        return fresh.get(kid)

    # -- fetching (runs in a helper thread, under a deadline) -----------------------------
    def _fetch(self, deadline: float) -> dict[str, jwt.PyJWK]:
        if self._jwks_uri is None:
            discovery = _get_json(self.issuer + DISCOVERY_PATH, deadline)
            uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(uri, str):
                raise KeysUnavailable("signing keys unavailable", "discovery document has no jwks_uri")
            self._jwks_uri = _check_url(uri, self.issuer)
        return parse_key_set(_get_json(self._jwks_uri, deadline))


class AsymmetricVerifier:
    """Checks `DT-Asymmetric-Signature` tokens. Keep one per container (the key cache)."""

    def __init__(
        self,
        issuer: str,
        leeway_s: float,
        organization_id: str | None = None,
        fetch_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        keys: KeySet | None = None,
    ):
        _require_cryptography()
        self.keys = keys or KeySet(issuer, fetch_timeout_s, clock)
        self.issuer = self.keys.issuer
        self._leeway = leeway_s
        self._org = organization_id
        self._clock = clock

    def verify(self, token: str, body: bytes, may_fetch: bool = True) -> dict:
        """The token's claims; `SignatureError` (401) or `KeysUnavailable` (503), or, with
        ``may_fetch=False``, `KeysNeeded` where the key server would have to be asked."""
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise SignatureError("token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise SignatureError("token algorithm is not ES256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise SignatureError("token has no key id (kid)")
        jwk = self.keys.key(kid, may_fetch)
        if jwk is None:
            raise SignatureError("token is signed with an unknown key (kid)")
        try:
            claims = DECODER.decode(token, jwk.key, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError:
            raise SignatureError("token signature is invalid") from None
        except jwt.InvalidAlgorithmError:
            raise SignatureError("token algorithm is not ES256") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise SignatureError("token is malformed") from None
        if not isinstance(claims, dict):
            raise SignatureError("token is malformed")
        if claims.get("iss") != self.issuer:
            raise SignatureError("token issuer is not the configured issuer")
        check_times(claims, self._clock(), self._leeway)
        actual = claims.get("checksum_sha256")
        if not isinstance(actual, str):
            raise SignatureError("token has no body checksum")
        expected = hashlib.sha256(body).hexdigest().encode("ascii")
        if not hmac.compare_digest(actual.lower().encode("ascii", "replace"), expected):
            raise SignatureError("body checksum does not match the token")
        if self._org is not None and claims.get("sub") != self._org:
            raise SignatureError("token is for another organization (sub)")
        return claims


def parse_key_set(doc: object) -> dict[str, jwt.PyJWK]:
    """kid -> key for the ES256 (EC P-256) signing keys of a JWKS document; others skipped."""
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise KeysUnavailable("signing keys unavailable", "key set document has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("kty") != "EC" or entry.get("crv") != "P-256" or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
    return keys


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401  (PyJWT needs it for ES256)
    except ImportError:
        raise NotConfigured(
            "receiver is not configured (asymmetric verification unavailable)",
            "the 'cryptography' package is not installed: pip install 'dtconnector[asymmetric]'",
        ) from None


def _with_deadline(fetch: Callable[[float], dict], timeout_s: float) -> dict:
    """Run `fetch(deadline)` in a daemon thread and stop waiting at the deadline: socket
    timeouts alone do not bound DNS lookups, nor a server that trickles its answer."""
    deadline = time.monotonic() + timeout_s
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fetch(deadline)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="dtconnector-jwks-fetch", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise KeysUnavailable(
            "signing keys unavailable; retry later",
            f"DT's key server did not answer within {timeout_s:g} s",
        )
    if "error" in box:
        error = box["error"]
        if isinstance(error, KeysUnavailable):
            raise error
        raise KeysUnavailable(
            "signing keys unavailable; retry later", f"fetching signing keys failed: {type(error).__name__}"
        ) from error
    return box["value"]


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(req.full_url).scheme == "https" and not newurl.startswith("https://"):
            return None  # an https key server must not hand us over to plain http
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list = [_NoDowngrade()]
    if host in ("127.0.0.1", "localhost", "::1"):
        handlers.append(urllib.request.ProxyHandler({}))  # a proxy cannot reach our loopback
    return urllib.request.build_opener(*handlers)


def _get_json(url: str, deadline: float) -> object:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise KeysUnavailable("signing keys unavailable; retry later", "key fetch ran out of time")
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "dtconnector"})
    try:
        with _opener(url).open(request, timeout=remaining) as response:
            data = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise KeysUnavailable("signing keys unavailable; retry later", f"{url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, bad URLs
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise KeysUnavailable("signing keys unavailable; retry later", f"cannot fetch {url}: {reason}") from None
    except Exception as exc:  # http.client.HTTPException and friends: a broken server
        raise KeysUnavailable("signing keys unavailable; retry later", f"cannot fetch {url}: {type(exc).__name__}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise KeysUnavailable("signing keys unavailable; retry later", f"{url} answered an oversized document")
    try:
        return json.loads(data)
    except ValueError:
        raise KeysUnavailable("signing keys unavailable; retry later", f"{url} did not answer JSON") from None


def _check_url(uri: str, issuer: str) -> str:
    """`jwks_uri` must be HTTPS, or plain HTTP to loopback when the issuer is loopback HTTP."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and issuer.startswith("http://") and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return uri
    raise KeysUnavailable("signing keys unavailable", f"discovery document's jwks_uri is not usable: {uri!r}")
