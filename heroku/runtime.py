"""Everything a dyno process builds once, lazily: settings, the Redis clients, the ports,
core's Receiver and Worker, the web dyno's ingest.

Nothing here runs at import, so a missing variable is a `ConfigError` on first use (the web
dyno answers 503, DT retries) rather than a crash at start. The synchronous client (one
connection pool per process) serves the worker and the WSGI mount; the web dyno's asyncio
client and ingest belong to the event loop that built them (their connections and
futures are bound to it), one per loop. Tests call `reset()` after changing the environment.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
_lock = threading.RLock()
_cache: dict[str, object] = {}
#: Bumped by `reset()`, so apps built from these objects (`heroku.asgi`) rebuild too.
generation = 0


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
    global generation
    with _lock:
        generation += 1
        client = _cache.get("redis")
        loop_bound = _cache.get("loop")
        _cache.clear()
    if client is not None:
        try:
            client.close()
        except Exception:
            pass
    if loop_bound is not None:
        _close_on_its_loop(*loop_bound)


def _close_on_its_loop(loop: asyncio.AbstractEventLoop, ingest) -> None:
    """Close an asyncio client from any thread: on its own loop if that still runs."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(ingest.client.aclose())
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(ingest.client.aclose(), loop)


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


def accept_script():
    """The web's claim-and-enqueue script call builder (`heroku.ingest`)."""
    from core.receiver import max_backlog_setting

    from .ingest import AcceptScript

    return _once("accept_script", lambda: AcceptScript(prefix(), settings().dedup_ttl_s, max_backlog_setting()))


def accept_call():
    """`heroku.ingest.ACCEPT` on the synchronous client (the WSGI mount's ingest)."""
    from .ingest import ACCEPT

    return _once("accept_call", lambda: redis().register_script(ACCEPT))


def ingest():
    """The running event loop's `heroku.ingest.RedisIngest` (its asyncio client inside)."""
    loop = asyncio.get_running_loop()
    bound = _cache.get("loop")
    if bound is not None and bound[0] is loop:
        return bound[1]
    from .connection import connect_async, redis_url
    from .ingest import RedisIngest

    built = RedisIngest(receiver(), connect_async(redis_url()), accept_script())
    with _lock:
        previous, _cache["loop"] = _cache.get("loop"), (loop, built)
    if previous is not None:  # tests: another loop's client, whose loop may be gone
        _close_on_its_loop(*previous)
    return built


def worker():
    from core import logs
    from core.worker import Worker

    def build():
        logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
        from .metrics import RECORDER

        return Worker(settings(), ledger=claim_store(), state=state_store(), metrics=RECORDER)

    return _once("worker", build)
