"""The web dyno's ingest: claim an admitted event's id and queue it in one Redis script.

`core.claims.Claims.acquire` with an `core.ports.AtomicOutbox` is the dedup state machine
every platform runs; `ACCEPT` is the same machine as one Lua script, so a new event costs
one atomic round trip instead of a `SET NX`, an `LPUSH` and a compare-and-set:

    no record                       write the claim COMPLETED together with the message  → 202
    live COMPLETED record           nothing                                              → 200 duplicate
    live IN_PROGRESS record         nothing (written by core's Receiver on this store, e.g.
                                    the previous release during a deploy)               → 503
    expired record                  taken over: written COMPLETED with the message, keeping
                                    its ``done`` list if it was IN_PROGRESS              → 202
    DT_MAX_BACKLOG messages wait    nothing (for a new event; a duplicate is still 200)  → 503 + Retry-After
    on the queue already

The record is the one `heroku.stores` writes and the worker reads (``{"s","e","v","d"}``
under ``<prefix>c:<key>``, expiring at `core.retention.removable_at`), and the message the
one `heroku.queue` takes (``<32 hex id>:<body>``, LPUSHed on ``<prefix>q``).

The script takes any number of events: the asyncio `RedisIngest` sends the events that
arrive while the previous call is on the wire as one call (a group commit: one round trip
and one connection for many concurrent requests, which matters on plans that cap clients).
Redis runs a script alone, so the events of one call are decided one after the other
exactly as if each had its own call; each 202 waits only for the call that holds its event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from core.claims import new_version
from core.http import Response
from core.keys import store_key
from core.logs import event_log
from core.ports import COMPLETED, Claim
from core.receiver import (
    Admitted,
    accepted,
    backlog_full,
    duplicate,
    in_flight,
    log_accepted,
    store_unavailable as unavailable,
)

from .queue import new_message
from .stores import encode_claim, expire_at_ms

# ``DT_MAX_BACKLOG``: messages waiting on the queue at most; past it a new event is
# answered 503 with ``Retry-After`` (DT retries it later; nothing is lost): the same
# setting, default and answer as `dtconnector serve` (`core.receiver.max_backlog_setting`).
#: A full backlog is logged at most this often (one line per refused request would be a
#: flood exactly when the dyno is busiest).
BACKLOG_LOG_EVERY_S = 10.0
#: Events one script call decides at most: a call's size, and the time Redis spends on it
#: while other clients wait, stay small.
MAX_BATCH = 256

# KEYS: the queue, then one claim key per event. ARGV: now (epoch seconds), the backlog
# bound (0: none, for tests of the state machine alone), then per event: its record written
# COMPLETED with an empty "d" list, the record's expiry (unix ms), its queue message.
# Returns one code per event: ACCEPTED, DUPLICATE, IN_FLIGHT, BACKLOG_FULL or TAKEN_OVER.
ACCEPT = """
local now = tonumber(ARGV[1])
local bound = tonumber(ARGV[2])
local codes = {}
for i = 2, #KEYS do
  local at = 3 + (i - 2) * 3
  local record = ARGV[at]
  local code = 0
  local current = redis.call('GET', KEYS[i])
  if current then
    local claim = cjson.decode(current)
    if tonumber(claim['e']) > now then
      if claim['s'] == 'COMPLETED' then code = 1 else code = 2 end
    else
      code = 4
      local done = claim['d']
      if claim['s'] == 'IN_PROGRESS' and type(done) == 'table' and #done > 0 then
        record = string.sub(record, 1, -4) .. cjson.encode(done) .. '}'
      end
    end
  end
  if (code == 0 or code == 4) and bound > 0 and redis.call('LLEN', KEYS[1]) >= bound then code = 3 end
  if code == 0 or code == 4 then
    redis.call('SET', KEYS[i], record, 'PXAT', ARGV[at + 1])
    redis.call('LPUSH', KEYS[1], ARGV[at + 2])
  end
  codes[#codes + 1] = code
end
return codes
"""

ACCEPTED, DUPLICATE, IN_FLIGHT, BACKLOG_FULL, TAKEN_OVER = range(5)  # the script's codes, 0 to 4


def answer_for(code: int, event_id: str, *, logged: bool = True) -> Response:
    """The answer `core.receiver.Receiver.accept` gives for the same outcome (same status,
    payload, reason and log line), plus the backlog bound's 503. `logged`: the 202's line
    (`answers_for` writes one line for a call's 202s instead)."""
    if code == ACCEPTED or code == TAKEN_OVER:
        return accepted(event_id, logged)
    if code == DUPLICATE:
        return duplicate(event_id)
    if code == IN_FLIGHT:
        return in_flight(event_id)
    if code == BACKLOG_FULL:
        return backlog_full()
    raise ValueError(f"unknown ingest script answer {code!r}")


def answers_for(codes: list, events: list[Admitted], limit: int) -> list[Response]:
    """The answer to each event from the script's codes (one per event, in order)."""
    if len(codes) != len(events):
        raise RuntimeError(f"the ingest script answered {len(codes)} codes for {len(events)} events")
    codes = [int(code) for code in codes]
    BACKLOG_LOG.refused(codes, limit)
    answers = [answer_for(code, admitted.event_id, logged=False) for code, admitted in zip(codes, events)]
    log_accepted(answers)  # one line for the call's 202s: a line per event cost more than its script share
    return answers


def store_unavailable(event_id: str, exc: BaseException) -> Response:
    from .connection import describe

    event_log(logging.ERROR, "could not claim the event", eventId=event_id, error=describe(exc))
    return unavailable()


class BacklogLog:
    """Says that the backlog is full, at most every `BACKLOG_LOG_EVERY_S`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._last = -BACKLOG_LOG_EVERY_S

    def refused(self, codes, limit: int) -> None:
        if BACKLOG_FULL in codes and self._clock() - self._last >= BACKLOG_LOG_EVERY_S:
            self._last = self._clock()
            event_log(logging.WARNING, "backlog over DT_MAX_BACKLOG: answering 503 until the worker catches up",
                      limit=limit)


BACKLOG_LOG = BacklogLog()


class AcceptScript:
    """Builds one call of `ACCEPT` for a list of admitted events: what the Python side of
    `Claims.acquire` computes (the fresh record, its expiry, the message), nothing else."""

    def __init__(self, prefix: str, dedup_ttl_s: float, backlog: int, clock: Callable[[], float] = time.time):
        self.claim_prefix = prefix + "c:"
        self.queue_key = prefix + "q"
        self.dedup_ttl_s = dedup_ttl_s
        self.backlog = backlog
        self._clock = clock

    def call(self, events: list[Admitted]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV for one script call deciding `events`, in order. The records of
        one call differ only in their version: `encode_claim` writes the rest once."""
        now = self._clock()
        claim = Claim(COMPLETED, now + self.dedup_ttl_s, _VERSION_SLOT)
        head, tail = encode_claim(claim).split(_VERSION_SLOT)
        expires = expire_at_ms(claim, now)
        keys = [self.queue_key]
        args: list[Any] = [repr(now), self.backlog]
        for admitted in events:
            keys.append(self.claim_prefix + store_key(admitted.event_id))
            args += [head + new_version() + tail, expires, new_message(admitted.text)]
        return keys, args


_VERSION_SLOT = "<version>"  # JSON writes it as it is; a real version is 16 hex digits


class RedisIngest:
    """`core.asgi.Ingest` on Redis's asyncio client: `admit` is the Receiver's (CPU only,
    inline), `accept` awaits the one script call holding its event.

    Calls are serialised: while one is on the wire, arriving events wait in `_pending` and
    go out together as the next call, so one connection carries the whole load and a burst
    of requests costs a few round trips, not one each.
    """

    def __init__(self, receiver, client, script: AcceptScript):
        self.receiver = receiver
        self.max_body_bytes = receiver.settings.max_body_bytes
        self.client = client
        self.script = script
        self._sha: str | None = None
        self._pending: list[tuple[Admitted, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    def admit(self, request, *, may_fetch_keys: bool = True):
        return self.receiver.admit(request, may_fetch_keys=may_fetch_keys)

    def record(self, response: Response, started: float) -> None:
        self.receiver.record_quietly(response, started)

    async def accept(self, admitted: Admitted) -> Response:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((admitted, future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_pending())
        return await future

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[Admitted, asyncio.Future]]) -> None:
        """Decide `batch` in one call and resolve every waiting request, whatever happens."""
        try:
            answers = await self._answers([admitted for admitted, _ in batch])
        except BaseException as exc:  # a bug (answered 503 by core.asgi), or the loop stopping
            for _, future in batch:
                if not future.done():
                    future.cancel() if isinstance(exc, asyncio.CancelledError) else future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), response in zip(batch, answers):
            if not future.done():  # done: its request was cancelled (server shutting down)
                future.set_result(response)

    async def _answers(self, events: list[Admitted]) -> list[Response]:
        from redis.exceptions import RedisError

        try:
            codes = await self._call(events)
        except RedisError as exc:
            return [store_unavailable(a.event_id, exc) for a in events]
        return answers_for(codes, events, self.script.backlog)

    async def _call(self, events: list[Admitted]) -> list:
        from redis.exceptions import NoScriptError

        keys, args = self.script.call(events)
        if self._sha is None:
            self._sha = await self.client.script_load(ACCEPT)
        try:
            return await self.client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # the server restarted or its scripts were flushed: nothing ran
            self._sha = await self.client.script_load(ACCEPT)
            return await self.client.evalsha(self._sha, len(keys), *keys, *args)


def accept_now(accept, script: AcceptScript, admitted: Admitted) -> Response:
    """`RedisIngest.accept` for one event, synchronously (the WSGI mount). `accept` is
    `ACCEPT` registered on a synchronous client (``client.register_script(ACCEPT)``)."""
    from redis.exceptions import RedisError

    keys, args = script.call([admitted])
    try:
        codes = accept(keys=keys, args=args)
    except RedisError as exc:
        return store_unavailable(admitted.event_id, exc)
    return answers_for(codes, [admitted], script.backlog)[0]
