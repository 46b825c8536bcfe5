"""The Redis connections, from `REDIS_URL`: one synchronous client per process (the worker,
`--dead-letters`, the WSGI mount) and one asyncio client per event loop (the web dyno).

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
#: Connections the web dyno's asyncio client opens at most: one for the ingest's
#: pipelined batches, one for `/healthz`, spare for a batch sent while one is being read.
ASYNC_MAX_CONNECTIONS = 4


def redis_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = (env.get("REDIS_URL") or env.get("REDIS_TLS_URL") or "").strip()
    if not url:
        raise ConfigError("REDIS_URL is not set (add the heroku-redis add-on)")
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


def client_options(url: str, env: Mapping[str, str] | None = None, *, asyncio: bool = False) -> dict:
    """The keyword arguments given to `redis.Redis.from_url` (or, with `asyncio`,
    `redis.asyncio.Redis.from_url`) besides the URL."""
    env = os.environ if env is None else env
    from redis.backoff import ExponentialBackoff

    if asyncio:
        from redis.asyncio.retry import Retry
    else:
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


def connect_async(
    url: str, env: Mapping[str, str] | None = None, *, max_connections: int = ASYNC_MAX_CONNECTIONS,
    client_name: str = "dtconnector-web",
):
    """A `redis.asyncio.Redis` client for the running event loop, on a pool of at most
    `max_connections` that makes a caller wait for a free connection rather than fail:
    Heroku Key-Value Store plans cap clients (``mini``: 20 for every dyno together), and the
    web dyno's ingest pipelines concurrent requests through one connection anyway
    (`heroku.ingest`). The connections are named `client_name` in Redis's ``CLIENT LIST``."""
    from redis.asyncio import BlockingConnectionPool, Redis

    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=SOCKET_TIMEOUT_S, client_name=client_name,
        **client_options(url, env, asyncio=True),
    )
    return Redis.from_pool(pool)


def key_prefix(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("DT_REDIS_PREFIX", DEFAULT_PREFIX)


def describe(exc: BaseException) -> str:
    """A short error text that never contains the URL (its password)."""
    return type(exc).__name__
