"""The signature secret from AWS Secrets Manager (``DT_SIGNATURE_SECRET_ARN``).

Read once per container and cached: a rotated secret reaches new containers at once and
running ones when they are recycled (or on the next cold start after a redeploy). The
secret value is either the plain secret string, or a JSON object with the keys
``DT_SIGNATURE_SECRET`` and, during a rotation, ``DT_SIGNATURE_SECRET_PREVIOUS``.
A failed read is not cached: the next request tries again.
"""

from __future__ import annotations

import json
import threading
from typing import Mapping

from core.config import Secret
from core.ports import StoreError

from .errors import translated

_cache: dict[str, tuple[Secret, ...]] = {}
_lock = threading.Lock()


class SecretUnavailable(StoreError):
    """Secrets Manager could not be read, or the secret holds no usable value."""


def _parse(raw: str) -> list[str]:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        values = [doc.get("DT_SIGNATURE_SECRET"), doc.get("DT_SIGNATURE_SECRET_PREVIOUS")]
        return [v for v in values if isinstance(v, str) and v]
    return [raw] if raw else []


def fetch(client_factory, arn: str) -> tuple[Secret, ...]:
    """The secrets stored under `arn` (current first), cached for the container's life.
    `client_factory` builds the Secrets Manager client, only on a cache miss."""
    with _lock:
        cached = _cache.get(arn)
        if cached is not None:
            return cached
        with translated("Secrets Manager GetSecretValue", SecretUnavailable):
            reply = client_factory().get_secret_value(SecretId=arn)
        raw = reply.get("SecretString")
        if raw is None and reply.get("SecretBinary") is not None:
            raw = bytes(reply["SecretBinary"]).decode("utf-8", "replace")
        values = _parse((raw or "").strip())
        if not values:
            raise SecretUnavailable("the secret named by DT_SIGNATURE_SECRET_ARN is empty")
        secrets = tuple(Secret(v) for v in values)
        _cache[arn] = secrets
        return secrets


def signature_secrets(client_factory, env: Mapping[str, str]) -> tuple[Secret, ...] | None:
    """Secrets to pass as ``Settings.from_env(secrets=...)``, or None when no ARN is set
    (then `DT_SIGNATURE_SECRET` from the environment applies). An env
    ``DT_SIGNATURE_SECRET_PREVIOUS`` is still honoured next to a plain-string secret."""
    arn = env.get("DT_SIGNATURE_SECRET_ARN", "").strip()
    if not arn:
        return None
    secrets = fetch(client_factory, arn)
    previous = env.get("DT_SIGNATURE_SECRET_PREVIOUS", "")
    if len(secrets) == 1 and previous:
        secrets = secrets + (Secret(previous),)
    return secrets


def clear_cache() -> None:
    with _lock:
        _cache.clear()
