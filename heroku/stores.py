"""core's ClaimStore and DeviceStateStore on Redis.

Claims are small JSON strings (``{"s","e","v","d"}``) under ``<prefix>c:<key>``. `create`
is one ``SET NX PXAT``; `replace` and `delete` are Lua scripts that compare the stored
version first, so each is one atomic round trip. Redis expires the key at
`core.retention.Retention.removable_at`: a completed claim when its dedup window ends, an
unfinished one the dead-letter retention plus a day after its lease (an abandoned worker
lease keeps the handlers it recorded as done for a redelivery, or a requeued dead letter,
to find). So Redis holds about one dedup window of claims.

Device state is one hash per device (``<prefix>s:<deviceId>``), one field per event type.
Each value starts with the version as a fixed-width decimal string, so the Lua
compare-and-set compares strings of equal length, which orders exactly like the integers.
Lua numbers are doubles: 1.8e18 ns timestamps 1 ns apart would compare equal as numbers.
"""

from __future__ import annotations

import json
import math
import time
from typing import Callable

from redis.exceptions import RedisError

from core.ports import IN_PROGRESS, Claim, DeviceState, StoreError
from core.retention import Retention

from .connection import describe

#: The shortest time Redis keeps a claim just written (one already past its expiry is
#: still written, and then reported expired by core, rather than vanishing on the spot).
EXPIRY_MARGIN_S = 1.0

_REPLACE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['v'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
"""

_DELETE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['v'] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# ARGV[1]: the new version as VERSION_WIDTH digits; ARGV[2]: the value (version + ':' + JSON).
_PUT_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], ARGV[3])
if current and string.sub(current, 1, 20) >= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[2])
return 1
"""

# `create_many`: SET NX for each claim; with ARGV[1] = '1', KEYS[1] is the worker's held
# set, made to list exactly the claims this call created. KEYS: held set, the claim keys.
# ARGV: '0'/'1', then value and PXAT per claim. Returns 1/0 per claim.
_CREATE_MANY = """
local holding = ARGV[1] == '1'
if holding then redis.call('DEL', KEYS[1]) end
local out = {}
for i = 2, #KEYS do
  local j = 2 * (i - 1)
  if redis.call('SET', KEYS[i], ARGV[j], 'PXAT', ARGV[j + 1], 'NX') then
    out[#out + 1] = 1
    if holding then redis.call('SADD', KEYS[1], KEYS[i]) end
  else
    out[#out + 1] = 0
  end
end
return out
"""

# `replace_many`: `_REPLACE` for each claim. KEYS: the claim keys (distinct). ARGV: expected
# version, value and PXAT per claim. Returns 1/0 per claim.
_REPLACE_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  local j = 3 * (i - 1)
  local current = redis.call('GET', key)
  if current and cjson.decode(current)['v'] == ARGV[j + 1] then
    redis.call('SET', key, ARGV[j + 2], 'PXAT', ARGV[j + 3])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# `put_many_if_newer`: `_PUT_IF_NEWER` for each state, in order (a device may repeat).
# KEYS: the device hashes. ARGV: version, value and field per state. Returns how many changed.
_PUT_MANY_IF_NEWER = """
local changed = 0
for i, key in ipairs(KEYS) do
  local j = 3 * (i - 1)
  local current = redis.call('HGET', key, ARGV[j + 3])
  if not current or string.sub(current, 1, 20) < ARGV[j + 1] then
    redis.call('HSET', key, ARGV[j + 3], ARGV[j + 2])
    changed = changed + 1
  end
end
return changed
"""

#: A Lua function for scripts that find a worker dead (`heroku.queue`'s recover): each
#: claim in its held set (`RedisClaimStore.hold_in`) still in progress expires now, with a
#: new version, keeping its finished handlers, so the redelivery takes it over at once
#: instead of after the lease (and the dead worker, should it be alive after all, can no
#: longer record progress on it: `core.claims.LostClaim`). Then the set is deleted.
EXPIRE_HELD_CLAIMS_LUA = """
local function expire_held_claims(held, now, version)
  for n, key in ipairs(redis.call('SMEMBERS', held)) do
    local raw = redis.call('GET', key)
    if raw then
      local claim = cjson.decode(raw)
      if claim['s'] == '%s' and tonumber(claim['e']) > tonumber(now) then
        local done = '[]'
        if claim['d'] and #claim['d'] > 0 then done = cjson.encode(claim['d']) end
        redis.call('SET', key, '{"s":"%s","e":' .. now .. ',"v":' .. cjson.encode(version .. '.' .. n)
          .. ',"d":' .. done .. '}', 'KEEPTTL')
      end
    end
  end
  redis.call('DEL', held)
end
""" % (IN_PROGRESS, IN_PROGRESS)

VERSION_WIDTH = 20
_OFFSET = 2**63  # shifts any int64 (even before 1970) into 0 .. 2**64-1: 20 digits


def encode_version(version: int) -> str:
    """`version` as a fixed-width decimal string that sorts like the integer."""
    shifted = int(version) + _OFFSET
    if not 0 <= shifted < 2**64:
        raise ValueError("device state version is outside the 64-bit range")
    return f"{shifted:0{VERSION_WIDTH}d}"


def encode_claim(claim: Claim) -> str:
    return json.dumps(
        {"s": claim.status, "e": claim.expires_at, "v": claim.version, "d": list(claim.done)},
        separators=(",", ":"),
    )


def decode_claim(raw: bytes | str) -> Claim:
    d = json.loads(raw)
    return Claim(d["s"], float(d["e"]), d["v"], tuple(d.get("d") or ()))


def expire_at_ms(claim: Claim, now: float, retention: Retention = Retention()) -> int:
    """When Redis drops `claim` (unix ms, for ``PXAT``): at `Retention.removable_at`, and
    never sooner than `EXPIRY_MARGIN_S` from `now`. (Ingest's claims are COMPLETED: their
    moment is their own expiry, whatever the dead-letter retention.)"""
    return math.ceil(max(retention.removable_at(claim), now + EXPIRY_MARGIN_S) * 1000)


class RedisClaimStore:
    def __init__(self, client, prefix: str, clock: Callable[[], float] = time.time, retention: Retention | None = None):
        self.client = client
        self._prefix = prefix + "c:"
        self._clock = clock
        self._retention = Retention.from_env() if retention is None else retention
        self._replace = client.register_script(_REPLACE)
        self._delete = client.register_script(_DELETE)
        self._create_many = client.register_script(_CREATE_MANY)
        self._replace_many = client.register_script(_REPLACE_MANY)
        self._held: str | None = None

    def hold_in(self, held_key: str) -> None:
        """The worker dyno: from now on each `create_many` (a batch's new claims) lists the
        claims it created in the set `held_key`, replacing the last batch's. Should this
        worker die, the next one's recover expires those still in progress (with the
        worker's processing list) instead of leaving the events it had not reached to wait
        out their lease."""
        self._held = held_key

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _expire_at_ms(self, claim: Claim) -> int:
        return expire_at_ms(claim, self._clock(), self._retention)

    def create(self, key: str, claim: Claim) -> bool:
        try:
            stored = self.client.set(self._key(key), encode_claim(claim), nx=True, pxat=self._expire_at_ms(claim))
        except RedisError as exc:
            raise StoreError(f"redis claim create failed: {describe(exc)}") from exc
        return bool(stored)

    def create_many(self, records: list[tuple[str, Claim]]) -> list[bool]:
        """`create` for each ``(key, claim)`` in one round trip (one script: all or none):
        whether each was created (False when a record exists or an earlier one has the key)."""
        if not records:
            return []
        args: list = ["1" if self._held else "0"]
        for _, claim in records:
            args += (encode_claim(claim), self._expire_at_ms(claim))
        keys = [self._held or self._prefix] + [self._key(key) for key, _ in records]
        try:
            created = self._create_many(keys=keys, args=args, client=self.client)
        except RedisError as exc:
            raise StoreError(f"redis claim create failed: {describe(exc)}") from exc
        return [flag == 1 for flag in created]

    def replace_many(self, items: list[tuple[str, str, Claim]]) -> list[bool]:
        """`replace` for each ``(key, expected_version, claim)`` (distinct keys) in one round
        trip: whether each was replaced."""
        if not items:
            return []
        args: list = []
        for _, expected, claim in items:
            args += (expected, encode_claim(claim), self._expire_at_ms(claim))
        try:
            replaced = self._replace_many(keys=[self._key(key) for key, _, _ in items], args=args, client=self.client)
        except RedisError as exc:
            raise StoreError(f"redis claim replace failed: {describe(exc)}") from exc
        return [flag == 1 for flag in replaced]

    def get(self, key: str) -> Claim | None:
        try:
            raw = self.client.get(self._key(key))
        except RedisError as exc:
            raise StoreError(f"redis claim get failed: {describe(exc)}") from exc
        return None if raw is None else decode_claim(raw)

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        args = [expected_version, encode_claim(claim), self._expire_at_ms(claim)]
        try:
            return self._replace(keys=[self._key(key)], args=args, client=self.client) == 1
        except RedisError as exc:
            raise StoreError(f"redis claim replace failed: {describe(exc)}") from exc

    def delete(self, key: str, expected_version: str) -> bool:
        try:
            return self._delete(keys=[self._key(key)], args=[expected_version], client=self.client) == 1
        except RedisError as exc:
            raise StoreError(f"redis claim delete failed: {describe(exc)}") from exc


class RedisStateStore:
    def __init__(self, client, prefix: str):
        self.client = client
        self._prefix = prefix + "s:"
        self._put = client.register_script(_PUT_IF_NEWER)
        self._put_many = client.register_script(_PUT_MANY_IF_NEWER)

    def put_if_newer(self, state: DeviceState) -> bool:
        version, value = _state_value(state)
        try:
            result = self._put(
                keys=[self._prefix + state.device_id], args=[version, value, state.event_type], client=self.client
            )
        except RedisError as exc:
            raise StoreError(f"redis state update failed: {describe(exc)}") from exc
        return result == 1

    def put_many_if_newer(self, states: list[DeviceState]) -> int:
        """`put_if_newer` for each state, in order, in one round trip: how many were written."""
        if not states:
            return 0
        args: list = []
        for state in states:
            args += (*_state_value(state), state.event_type)
        try:
            return int(self._put_many(keys=[self._prefix + state.device_id for state in states], args=args,
                                      client=self.client))
        except RedisError as exc:
            raise StoreError(f"redis state update failed: {describe(exc)}") from exc

    def get_device(self, device_id: str) -> list[DeviceState]:
        try:
            fields = self.client.hgetall(self._prefix + device_id)
        except RedisError as exc:
            raise StoreError(f"redis state read failed: {describe(exc)}") from exc
        return [DeviceState.from_dict(json.loads(raw.split(b":", 1)[1])) for raw in fields.values()]


def _state_value(state: DeviceState) -> tuple[str, str]:
    """The version as compared, and the stored value (that version, ``:``, the state's JSON)."""
    version = encode_version(state.version)
    return version, version + ":" + json.dumps(state.to_dict(), separators=(",", ":"), ensure_ascii=False)
