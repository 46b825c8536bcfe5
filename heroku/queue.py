"""The work queue on Redis lists, with redelivery of anything a worker did not finish.

Why not RQ: RQ pickles a function call per job, forks a work horse per job by default, and
a worker killed with SIGKILL leaves its job in the StartedJobRegistry until a cleanup
marks it *failed*, which is not "redelivered". This is the classic reliable-queue pattern
instead, small enough to read:

    <prefix>q            LPUSH by ingest; workers take from the right (FIFO)
    <prefix>p:<worker>   each worker's processing list: a message moves there atomically
                         (LMOVE / BLMOVE) and leaves it only when acked, retried or
                         dead-lettered
    <prefix>hb:<worker>  the worker's heartbeat (a key with a TTL, refreshed by a thread)
    <prefix>workers      the set of worker ids, so a worker whose heartbeat expired
                         (SIGKILL, crash, lost dyno) has its processing list moved back
                         onto the queue by the next worker that looks (`recover`)
    <prefix>held:<worker> the ledger claims the worker's current batch began: `recover`
                         expires those still in progress, so the events it never reached
                         are not left waiting out their lease
    <prefix>attempts     hash: message id -> deliveries so far (counted when taken)
    <prefix>delayed      sorted set: messages waiting for a retry, scored by due time
    <prefix>dead         list of dead-lettered messages (JSON, newest last)

A message is ``<32 hex message id>:<raw body>``: its id is unique per enqueue, so two
copies of one event are two messages (the worker's ledger makes the second a no-op).
Every state change of a taken message is one Lua script that first removes it from the
processing list and does nothing if it was no longer there (recovered meanwhile), so a
message is never duplicated by the queue itself, only redelivered.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable

from redis.exceptions import RedisError

from core.claims import new_version
from core.ports import QueueError

from .connection import BLOCK_S, describe
from .stores import EXPIRE_HELD_CLAIMS_LUA

# Up to ARGV[1] messages, oldest first, each with its delivery count.
# KEYS: queue, processing, attempts. Returns {message, count, message, count, ...}.
_TAKE = """
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not m then break end
  out[#out + 1] = m
  out[#out + 1] = redis.call('HINCRBY', KEYS[3], string.sub(m, 1, 32), 1)
end
return out
"""

# KEYS: processing, queue, delayed, attempts. ARGV: message, due (0 = now), uncount (0/1).
_RETRY = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
else
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[4], string.sub(ARGV[1], 1, 32), -1) end
return 1
"""

# KEYS: processing, attempts. ARGV: the messages done. Returns how many were still ours.
_ACK = """
local n = 0
for _, m in ipairs(ARGV) do
  if redis.call('LREM', KEYS[1], 1, m) > 0 then
    redis.call('HDEL', KEYS[2], string.sub(m, 1, 32))
    n = n + 1
  end
end
return n
"""

# KEYS: processing, dead, attempts. ARGV: message, dead-letter record.
_DEAD = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], string.sub(ARGV[1], 1, 32))
return 1
"""

# KEYS: dead, queue. ARGV: the dead-letter record, the new message.
_REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

# Dead letters are appended newest last: pop from the left while the oldest is past its
# retention. KEYS: dead. ARGV: cutoff (epoch seconds), limit.
_EXPIRE_DEAD = """
local n = 0
while n < tonumber(ARGV[2]) do
  local first = redis.call('LINDEX', KEYS[1], 0)
  if not first then break end
  if tonumber(cjson.decode(first)['deadAt']) > tonumber(ARGV[1]) then break end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
return n
"""

# KEYS: delayed, queue. ARGV: now.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('RPUSH', KEYS[2], m)
end
return #due
"""

# Moves the processing lists of workers whose heartbeat expired back onto the queue, after
# expiring the ledger claims each had begun (`heroku.stores.EXPIRE_HELD_CLAIMS_LUA`).
# KEYS: workers, queue. ARGV: prefix, now, a fresh version. (Key names are built here: fine
# on a single Redis, which is what Heroku Key-Value Store is; not for Redis Cluster.)
_RECOVER = EXPIRE_HELD_CLAIMS_LUA + """
local moved = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'hb:' .. w) == 0 then
    expire_held_claims(ARGV[1] .. 'held:' .. w, ARGV[2], ARGV[3])
    local processing = ARGV[1] .. 'p:' .. w
    while redis.call('LMOVE', processing, KEYS[2], 'RIGHT', 'RIGHT') do moved = moved + 1 end
    redis.call('SREM', KEYS[1], w)
  end
end
return moved
"""

# Put everything in one worker's processing list back on the queue (its own clean exit).
# KEYS: processing, queue, attempts. ARGV: uncount (0/1).
_RELEASE = """
local moved = 0
while true do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT')
  if not m then break end
  if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[3], string.sub(m, 1, 32), -1) end
  moved = moved + 1
end
return moved
"""

_ID_LEN = 32


@dataclass(frozen=True)
class Message:
    raw: bytes  # exactly as stored: the handle for ack/retry/dead-letter
    attempts: int

    @property
    def id(self) -> str:
        return self.raw[:_ID_LEN].decode("ascii")

    @property
    def body(self) -> str:
        return self.raw[_ID_LEN + 1 :].decode("utf-8")

    @property
    def event_id(self) -> str | None:
        try:
            return json.loads(self.body)["event"]["eventId"]
        except Exception:
            return None


def new_message(body: str) -> str:
    """A queue message for `body`: a fresh random id of 32 hex digits (so two copies of one
    event are two messages), ':', the body."""
    return os.urandom(16).hex() + ":" + body


def _queue_error(action: str, exc: RedisError) -> QueueError:
    return QueueError(f"redis queue {action} failed: {describe(exc)}")


class RedisQueue:
    """Ingest uses `enqueue` (core's EventQueue port); the worker uses the rest."""

    def __init__(self, client, prefix: str, clock: Callable[[], float] = time.time):
        self.client = client
        self.prefix = prefix
        self._clock = clock
        self.queue_key = prefix + "q"
        self.attempts_key = prefix + "attempts"
        self.delayed_key = prefix + "delayed"
        self.dead_key = prefix + "dead"
        self.workers_key = prefix + "workers"
        self._take = client.register_script(_TAKE)
        self._retry = client.register_script(_RETRY)
        self._ack = client.register_script(_ACK)
        self._dead = client.register_script(_DEAD)
        self._expire_dead = client.register_script(_EXPIRE_DEAD)
        self._promote = client.register_script(_PROMOTE)
        self._recover = client.register_script(_RECOVER)
        self._release = client.register_script(_RELEASE)
        self._requeue = client.register_script(_REQUEUE)

    def processing_key(self, worker_id: str) -> str:
        return f"{self.prefix}p:{worker_id}"

    def heartbeat_key(self, worker_id: str) -> str:
        return f"{self.prefix}hb:{worker_id}"

    def held_key(self, worker_id: str) -> str:
        """The set of ledger claims the worker's current batch began (`RedisClaimStore.hold_in`)."""
        return f"{self.prefix}held:{worker_id}"

    # -- ingest ---------------------------------------------------------------------------
    def enqueue(self, message: str, *, event_id: str) -> None:
        raw = new_message(message)
        try:
            self.client.lpush(self.queue_key, raw)
        except RedisError as exc:
            raise _queue_error("enqueue", exc) from exc

    # -- worker ---------------------------------------------------------------------------
    def register(self, worker_id: str, heartbeat_ttl_s: float) -> None:
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self.heartbeat_key(worker_id), "1", px=int(heartbeat_ttl_s * 1000))
                pipe.sadd(self.workers_key, worker_id)
                pipe.execute()
        except RedisError as exc:
            raise _queue_error("register", exc) from exc

    def heartbeat(self, worker_id: str, heartbeat_ttl_s: float) -> None:
        try:
            self.client.set(self.heartbeat_key(worker_id), "1", px=int(heartbeat_ttl_s * 1000))
        except RedisError as exc:
            raise _queue_error("heartbeat", exc) from exc

    def unregister(self, worker_id: str) -> None:
        """Clean exit: anything still in our processing list goes back, uncounted."""
        self.release(worker_id, uncount=True)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.srem(self.workers_key, worker_id)
                pipe.delete(self.heartbeat_key(worker_id), self.held_key(worker_id))
                pipe.execute()
        except RedisError as exc:
            raise _queue_error("unregister", exc) from exc

    def release(self, worker_id: str, *, uncount: bool) -> int:
        keys = [self.processing_key(worker_id), self.queue_key, self.attempts_key]
        try:
            return int(self._release(keys=keys, args=["1" if uncount else "0"], client=self.client))
        except RedisError as exc:
            raise _queue_error("release", exc) from exc

    def recover(self) -> int:
        """Requeue the messages held by workers whose heartbeat expired, their begun ledger
        claims expired first. Returns how many messages."""
        args = [self.prefix, repr(float(self._clock())), new_version()]
        try:
            return int(self._recover(keys=[self.workers_key, self.queue_key], args=args, client=self.client))
        except RedisError as exc:
            raise _queue_error("recover", exc) from exc

    def promote_due(self) -> int:
        """Move delayed retries whose time has come onto the queue."""
        try:
            return int(self._promote(keys=[self.delayed_key, self.queue_key], args=[self._clock()], client=self.client))
        except RedisError as exc:
            raise _queue_error("promote", exc) from exc

    def take(self, worker_id: str, most: int = 1, block_s: float = 0.0) -> list[Message]:
        """Move up to `most` of the oldest messages into our processing list (one round
        trip), counting a delivery of each. When the queue is empty, waits up to `block_s`
        (at most BLOCK_S) for one."""
        processing = self.processing_key(worker_id)
        try:
            got = self._take(keys=[self.queue_key, processing, self.attempts_key], args=[most], client=self.client)
            if got:
                return [Message(got[i], int(got[i + 1])) for i in range(0, len(got), 2)]
            if block_s <= 0:
                return []
            raw = self.client.blmove(self.queue_key, processing, min(block_s, BLOCK_S), "RIGHT", "LEFT")
            if raw is None:
                return []
            attempts = self.client.hincrby(self.attempts_key, raw[:_ID_LEN].decode("ascii"), 1)
            return [Message(raw, int(attempts))]
        except RedisError as exc:
            raise _queue_error("take", exc) from exc

    def ack(self, worker_id: str, *messages: Message) -> int:
        """Remove finished messages from our processing list (one round trip for all).
        Returns how many were still ours (not recovered by another worker meanwhile)."""
        if not messages:
            return 0
        try:
            keys = [self.processing_key(worker_id), self.attempts_key]
            return int(self._ack(keys=keys, args=[m.raw for m in messages], client=self.client))
        except RedisError as exc:
            raise _queue_error("ack", exc) from exc

    def retry(self, worker_id: str, message: Message, delay_s: float = 0.0, *, uncount: bool = False) -> bool:
        """Back onto the queue (now, or after `delay_s`). `uncount`: this delivery does not
        count towards the attempts (it was interrupted, or another worker held the event)."""
        due = self._clock() + delay_s if delay_s > 0 else 0
        keys = [self.processing_key(worker_id), self.queue_key, self.delayed_key, self.attempts_key]
        try:
            return self._retry(keys=keys, args=[message.raw, due, "1" if uncount else "0"], client=self.client) == 1
        except RedisError as exc:
            raise _queue_error("retry", exc) from exc

    def dead_letter(self, worker_id: str, message: Message, error: str) -> bool:
        record = json.dumps(
            {
                "eventId": message.event_id,
                "messageId": message.id,
                "attempts": message.attempts,
                "error": error,
                "deadAt": self._clock(),
                "body": message.body,
            },
            separators=(",", ":"),
        )
        keys = [self.processing_key(worker_id), self.dead_key, self.attempts_key]
        try:
            return self._dead(keys=keys, args=[message.raw, record], client=self.client) == 1
        except RedisError as exc:
            raise _queue_error("dead-letter", exc) from exc

    def expire_dead_letters(self, retention_s: float, limit: int = 200) -> int:
        """Remove up to `limit` dead letters older than `retention_s` (core.retention's
        ``DT_DEAD_LETTER_RETENTION_S``): claims expire by themselves, the dead list does not."""
        try:
            return int(
                self._expire_dead(keys=[self.dead_key], args=[self._clock() - retention_s, limit], client=self.client)
            )
        except RedisError as exc:
            raise _queue_error("dead-letter expiry", exc) from exc

    # -- inspection -----------------------------------------------------------------------
    def depth(self) -> int:
        """Messages waiting, delayed or being processed (not dead letters)."""
        try:
            workers = [w.decode() for w in self.client.smembers(self.workers_key)]
            with self.client.pipeline(transaction=False) as pipe:
                pipe.llen(self.queue_key)
                pipe.zcard(self.delayed_key)
                for w in workers:
                    pipe.llen(self.processing_key(w))
                return sum(pipe.execute())
        except RedisError as exc:
            raise _queue_error("depth", exc) from exc

    def dead_letters(self) -> list[dict]:
        try:
            return [json.loads(r) for r in self.client.lrange(self.dead_key, 0, -1)]
        except RedisError as exc:
            raise _queue_error("dead-letter listing", exc) from exc

    def requeue_dead_letters(self) -> int:
        """Put every dead-lettered message back on the queue, with fresh attempts."""
        count = 0
        try:
            for record in self.client.lrange(self.dead_key, 0, -1):
                fresh = new_message(json.loads(record)["body"])
                count += self._requeue(keys=[self.dead_key, self.queue_key], args=[record, fresh], client=self.client)
        except RedisError as exc:
            raise _queue_error("requeue", exc) from exc
        return count
