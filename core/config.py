"""Settings read once from the environment.

Every platform uses the same variable names, so a deployment moves between clouds by
copying its settings. Secrets are wrapped in `Secret`, whose repr never shows the value,
so a settings object can be logged or shown in a traceback safely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_LEEWAY_S = 60.0
# Well under DT's 10 s answer budget: a claim older than this belongs to a request that
# died or timed out, and DT's next retry may take it over.
DEFAULT_CLAIM_LEASE_S = 8.0
# DT retries for 12 hours; remembering completed ids for 13 covers every retry.
DEFAULT_DEDUP_TTL_S = 13 * 3600.0
# How long one worker may hold an event before another may take it over.
DEFAULT_WORKER_LEASE_S = 300.0
DEFAULT_MAX_ATTEMPTS = 5
# Which signature headers a request must carry (see core/signature.py, SignaturePolicy).
SIGNATURE_MODES = ("secret", "asymmetric", "either", "both")
DEFAULT_SIGNATURE_MODE = "either"
# Who signs `DT-Asymmetric-Signature`; its keys come from this issuer's OpenID discovery document.
DEFAULT_JWKS_ISSUER = "https://identity.disruptive-technologies.com/data-connector"
# A fetch of DT's signing keys must leave most of DT's 10 s answer budget.
DEFAULT_KEY_FETCH_TIMEOUT_S = 2.0
# How events reach the worker: "http" (DT -> ingest -> our queue) or "direct" (DT publishes
# into the queue itself; the worker decodes DT's message, see core/direct.py).
DELIVERY_MODES = ("http", "direct")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class ConfigError(ValueError):
    """A setting is present but unusable. The message names the variable, never its value."""


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def number_setting(env: Mapping[str, str], name: str, default: float) -> float:
    """A non-negative number (seconds, mostly) from `env[name]`, or `default` when unset.
    Also used by the platforms' workers for their own settings."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1")
    return value


def check_issuer(value: str, name: str = "DT_JWKS_ISSUER") -> str:
    """`value` without a trailing slash. HTTPS only, except plain HTTP to a loopback host
    (the emulator's key server): keys fetched over plain HTTP could be swapped in transit."""
    issuer = value.strip().rstrip("/")
    if issuer.startswith("https://") and len(issuer) > len("https://"):
        return issuer
    if issuer.startswith("http://"):
        host = issuer[len("http://") :].split("/", 1)[0]
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host in _LOOPBACK_HOSTS:
            return issuer
    raise ConfigError(f"{name} must be an https:// URL (plain http:// only for 127.0.0.1/localhost)")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    secrets: tuple[Secret, ...] = ()
    allow_unsigned: bool = False
    leeway_s: float = DEFAULT_LEEWAY_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    claim_lease_s: float = DEFAULT_CLAIM_LEASE_S
    dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S
    worker_lease_s: float = DEFAULT_WORKER_LEASE_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    handler_modules: tuple[str, ...] = field(default=())
    signature_mode: str = DEFAULT_SIGNATURE_MODE
    jwks_issuer: str = DEFAULT_JWKS_ISSUER
    organization_id: str | None = None
    key_fetch_timeout_s: float = DEFAULT_KEY_FETCH_TIMEOUT_S
    delivery: str = "http"

    def __post_init__(self) -> None:
        if self.delivery not in DELIVERY_MODES:
            raise ConfigError(f"DT_DELIVERY must be one of: {', '.join(DELIVERY_MODES)}")
        if self.signature_mode not in SIGNATURE_MODES:
            raise ConfigError(f"DT_SIGNATURE_MODE must be one of: {', '.join(SIGNATURE_MODES)}")
        if self.jwks_issuer:  # "" = asymmetric verification off (only settable in code)
            object.__setattr__(self, "jwks_issuer", check_issuer(self.jwks_issuer))
        if not 0 < self.key_fetch_timeout_s < 10:
            raise ConfigError("DT_KEY_FETCH_TIMEOUT_S must be more than 0 and less than 10 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read the `DT_*` variables. `overrides` win (platforms pass secrets they fetched
        from a secret manager this way)."""
        env = os.environ if env is None else env
        secrets = tuple(
            Secret(env[name])
            for name in ("DT_SIGNATURE_SECRET", "DT_SIGNATURE_SECRET_PREVIOUS")
            if env.get(name)
        )
        modules = tuple(m.strip() for m in env.get("DT_HANDLERS", "").split(",") if m.strip())
        values = dict(
            secrets=secrets,
            allow_unsigned=_flag(env, "DT_ALLOW_UNSIGNED"),
            leeway_s=number_setting(env, "DT_CLOCK_LEEWAY_S", DEFAULT_LEEWAY_S),
            max_body_bytes=_int(env, "DT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            claim_lease_s=number_setting(env, "DT_CLAIM_LEASE_S", DEFAULT_CLAIM_LEASE_S),
            dedup_ttl_s=number_setting(env, "DT_DEDUP_TTL_S", DEFAULT_DEDUP_TTL_S),
            worker_lease_s=number_setting(env, "DT_WORKER_LEASE_S", DEFAULT_WORKER_LEASE_S),
            max_attempts=_int(env, "DT_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
            handler_modules=modules,
            signature_mode=env.get("DT_SIGNATURE_MODE", "").strip().lower() or DEFAULT_SIGNATURE_MODE,
            jwks_issuer=env.get("DT_JWKS_ISSUER", "").strip() or DEFAULT_JWKS_ISSUER,
            organization_id=env.get("DT_ORGANIZATION_ID", "").strip() or None,
            key_fetch_timeout_s=number_setting(env, "DT_KEY_FETCH_TIMEOUT_S", DEFAULT_KEY_FETCH_TIMEOUT_S),
            delivery=env.get("DT_DELIVERY", "").strip().lower() or "http",
        )
        values.update(overrides)
        return cls(**values)
