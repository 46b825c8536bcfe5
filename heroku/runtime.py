"""Everything a dyno process builds once, lazily: settings, the Redis client (one
connection pool per process), the ports, core's Receiver and Worker.

Nothing here runs at import. gunicorn forks its workers before the first request, so each
one builds its own pool on first use. Tests call `reset()` after changing the environment.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
_lock = threading.RLock()
_cache: dict[str, object] = {}


def _once(name: str, build: Callable[[], T]) -> T:
    try:
        return _cache[name]  # type: ignore[return-value]
    except KeyError:
        pass
    with _lock:
        if name not in _cache:
            _cache[name] = build()
        return _cache[name]  # type: ignore[return-value]


def reset() -> None:
    """Forget every built object (tests: after changing os.environ)."""
    with _lock:
        client = _cache.get("redis")
        _cache.clear()
    if client is not None:
        try:
            client.close()
        except Exception:
            pass


def settings():
    from core.config import Settings

    return _once("settings", Settings.from_env)


def redis():
    from .connection import connect, redis_url

    return _once("redis", lambda: connect(redis_url()))


def prefix() -> str:
    from .connection import key_prefix

    return _once("prefix", key_prefix)


def claim_store():
    from .stores import RedisClaimStore

    return _once("claims", lambda: RedisClaimStore(redis(), prefix()))


def state_store():
    from .stores import RedisStateStore

    return _once("state", lambda: RedisStateStore(redis(), prefix()))


def queue():
    from .queue import RedisQueue

    return _once("queue", lambda: RedisQueue(redis(), prefix()))


def receiver():
    from core import logs
    from core.receiver import Receiver

    def build():
        logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
        from .metrics import RECORDER

        return Receiver(settings(), claim_store(), queue(), metrics=RECORDER)

    return _once("receiver", build)


def worker():
    from core import logs
    from core.worker import Worker

    def build():
        logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
        from .metrics import RECORDER

        return Worker(settings(), ledger=claim_store(), state=state_store(), metrics=RECORDER)

    return _once("worker", build)
