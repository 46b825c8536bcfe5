"""The Redis connection: one client (one connection pool) per process, from `REDIS_URL`.

Heroku Key-Value Store sets `REDIS_URL` to a ``rediss://`` URL whose server certificate is
self-signed, so certificate verification is turned off for ``rediss://`` (the traffic is
still encrypted), as Heroku's docs instruct; set ``DT_REDIS_VERIFY_TLS=1`` to keep it on
(e.g. a Redis with a CA-signed certificate). ``ssl_cert_reqs`` is passed only for
``rediss://``: redis-py refuses the argument on plain connections.
"""

from __future__ import annotations

import os
from typing import Mapping
from urllib.parse import urlsplit

from core.config import ConfigError

DEFAULT_PREFIX = "dt:"
# Well under DT's 10 s answer budget; a blocking pop waits at most BLOCK_S < SOCKET_TIMEOUT_S.
SOCKET_TIMEOUT_S = 5.0
BLOCK_S = 1.0


def redis_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = (env.get("REDIS_URL") or env.get("REDIS_TLS_URL") or "").strip()
    if not url:
        raise ConfigError("REDIS_URL is not set (add the heroku-redis add-on)")
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


def client_options(url: str, env: Mapping[str, str] | None = None) -> dict:
    """The keyword arguments given to `redis.Redis.from_url` besides the URL."""
    env = os.environ if env is None else env
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    options: dict = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        # Heroku closes idle connections; check a pooled connection before reusing it.
        "health_check_interval": 60,
        # One quick retry covers a pooled connection the server already closed; redis-py's
        # default (10 retries with backoff up to 10 s) would outlast DT's 10 s budget.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    }
    if urlsplit(url).scheme == "rediss":
        verify = env.get("DT_REDIS_VERIFY_TLS", "").strip().lower() in {"1", "true", "yes", "on"}
        if not verify:
            options["ssl_cert_reqs"] = None
            options["ssl_check_hostname"] = False
    return options


def connect(url: str, env: Mapping[str, str] | None = None):
    """A `redis.Redis` client with its own connection pool (thread-safe; share it)."""
    import redis

    return redis.Redis.from_url(url, **client_options(url, env))


def key_prefix(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("DT_REDIS_PREFIX", DEFAULT_PREFIX)


def describe(exc: BaseException) -> str:
    """A short error text that never contains the URL (its password)."""
    return type(exc).__name__
