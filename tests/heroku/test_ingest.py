"""`heroku.ingest`: the one-script claim-and-enqueue is core's dedup state machine exactly.

Each case starts from the same stored record twice, on the real redis-server: once under
core's `Receiver.accept` (`Claims.acquire` with an `AtomicOutbox` over `RedisClaimStore`, the
reference), once under the `ACCEPT` script. Both must give the same answer and leave the
same record (status, expiry, ``done``, Redis TTL) and the same messages on the queue."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis

from core.config import Settings
from core.keys import store_key
from core.ports import COMPLETED, IN_PROGRESS, Claim
from core.receiver import Admitted, Receiver
from heroku.ingest import ACCEPT, AcceptScript, RedisIngest, accept_now
from heroku.queue import RedisQueue
from heroku.stores import RedisClaimStore, decode_claim, encode_claim, expire_at_ms
from tests.dt import event_body, event_id_of

NOW = 1_800_000_000.25
LEASE_S, TTL_S = 8.0, 3600.0


class ReferenceOutbox(RedisQueue):
    """`AtomicOutbox` for the reference run: create-if-absent, then enqueue. Not atomic,
    and it need not be here: the reference runs alone, one step after the other."""

    def __init__(self, client, prefix, store):
        super().__init__(client, prefix)
        self.store = store

    def claim_and_enqueue(self, key, claim, message, *, event_id):
        if not self.store.create(key, claim):
            return False
        self.enqueue(message, event_id=event_id)
        return True


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix(client):
    """A fresh key prefix per test (``<prefix>ref:``, ``<prefix>sut:``, ...), deleted after."""
    name = f"ingest-{uuid.uuid4().hex[:8]}:"
    yield name
    keys = client.keys(name + "*")
    if keys:
        client.delete(*keys)


def _settings() -> Settings:
    return Settings(secrets=(), allow_unsigned=True, claim_lease_s=LEASE_S, dedup_ttl_s=TTL_S)


def _seed(client, prefix: str, event_id: str, claim: Claim | None) -> None:
    if claim is not None:
        client.set(prefix + "c:" + store_key(event_id), encode_claim(claim), pxat=expire_at_ms(claim, NOW))


def _state(client, prefix: str, event_id: str):
    key = prefix + "c:" + store_key(event_id)
    raw = client.get(key)
    claim = None if raw is None else decode_claim(raw)
    bodies = [m.split(b":", 1)[1] for m in client.lrange(prefix + "q", 0, -1)]
    view = None if claim is None else (claim.status, claim.expires_at, claim.done)
    return view, client.pexpiretime(key), bodies


def _reference(client, prefix, admitted, seeded):
    store = RedisClaimStore(client, prefix, clock=lambda: NOW)
    outbox = ReferenceOutbox(client, prefix, store)
    _seed(client, prefix, admitted.event_id, seeded)
    response = Receiver(_settings(), store, outbox, clock=lambda: NOW).accept(admitted)
    return response, _state(client, prefix, admitted.event_id)


def _script(client, prefix, admitted, seeded, backlog=0):
    _seed(client, prefix, admitted.event_id, seeded)
    call = AcceptScript(prefix, TTL_S, backlog, clock=lambda: NOW)
    response = accept_now(client.register_script(ACCEPT), call, admitted)
    return response, _state(client, prefix, admitted.event_id)


SEEDS = {
    "absent": None,
    "completed, live": Claim(COMPLETED, NOW + 100, "v1"),
    "completed, expired": Claim(COMPLETED, NOW - 1, "v1", ("m.kept-not",)),
    "completed, expiring this instant": Claim(COMPLETED, NOW, "v1"),
    "in progress, live": Claim(IN_PROGRESS, NOW + 5, "v1", ("m.a",)),
    "in progress, expired, nothing done": Claim(IN_PROGRESS, NOW - 1, "v1"),
    "in progress, expired, two handlers done": Claim(IN_PROGRESS, NOW - 30, "v1", ("m.a", "pkg.mod.b")),
}


@pytest.mark.parametrize("seed", SEEDS, ids=list(SEEDS))
def test_the_script_is_claims_acquire_with_an_atomic_outbox(client, prefix, seed):
    body = event_body()
    admitted = Admitted(event_id_of(body), body.decode())
    expected, expected_state = _reference(client, prefix + "ref:", admitted, SEEDS[seed])
    got, got_state = _script(client, prefix + "sut:", admitted, SEEDS[seed])
    assert (got.status, got.payload, got.headers) == (expected.status, expected.payload, expected.headers)
    assert got_state == expected_state


def test_the_record_is_the_one_the_worker_reads(client, prefix):
    body = event_body()
    admitted = Admitted(event_id_of(body), body.decode())
    seeded = Claim(IN_PROGRESS, NOW - 1, "v1", ("m.a", "m/b\u00e9"))
    _script(client, prefix, admitted, seeded)
    stored = RedisClaimStore(client, prefix).get(store_key(admitted.event_id))
    assert (stored.status, stored.expires_at, stored.done) == (COMPLETED, NOW + TTL_S, ("m.a", "m/b\u00e9"))
    [message] = client.lrange(prefix + "q", 0, -1)
    assert message[32:33] == b":" and message[33:] == body  # heroku.queue.Message's layout


def test_one_call_decides_its_events_in_order(client, prefix):
    """A group commit decides each event as if it had its own call: the second copy of an
    event in the same call is a duplicate of the first."""
    first, second = event_body(), event_body()
    events = [Admitted(event_id_of(b), b.decode()) for b in (first, first, second)]
    keys, args = AcceptScript(prefix, TTL_S, 0, clock=lambda: NOW).call(events)
    assert client.register_script(ACCEPT)(keys=keys, args=args) == [0, 1, 0]
    assert client.llen(prefix + "q") == 2


def test_the_backlog_bound_refuses_new_events_only(client, prefix):
    body = event_body()
    admitted = Admitted(event_id_of(body), body.decode())
    client.lpush(prefix + "q", "1:x", "2:y")
    refused, state = _script(client, prefix, admitted, None, backlog=2)
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert refused.payload == {"error": "unavailable", "reason": "too many events waiting for the worker"}
    assert state[:2] == (None, -2)  # no claim written
    assert client.llen(prefix + "q") == 2
    client.rpop(prefix + "q")
    assert _script(client, prefix, admitted, None, backlog=2)[0].status == 202
    client.lpush(prefix + "q", "3:z")
    assert _script(client, prefix, admitted, None, backlog=2)[0].status == 200  # a duplicate is still answered


def test_concurrent_requests_share_script_calls(redis_url, prefix):
    """100 requests at once on the asyncio ingest: every one answered 202, in far fewer
    script calls than requests, through one connection."""
    from heroku.connection import connect_async

    bodies = [event_body() for _ in range(100)]
    receiver = Receiver(Settings(secrets=(), allow_unsigned=True), None, None)

    name = "test-group-commit"
    sync = redis.Redis.from_url(redis_url)

    async def main():
        client = connect_async(redis_url, client_name=name)
        ingest = RedisIngest(receiver, client, AcceptScript(prefix, TTL_S, 0))
        calls = 0
        real = ingest._call

        async def counted(events):
            nonlocal calls
            calls += 1
            return await real(events)

        ingest._call = counted
        answers = await asyncio.gather(*(ingest.accept(Admitted(event_id_of(b), b.decode())) for b in bodies))
        opened = sum(c["name"] == name for c in sync.client_list())
        await client.aclose()
        return answers, calls, opened

    answers, calls, opened = asyncio.run(main())
    assert [a.status for a in answers] == [202] * 100
    assert [json.loads(a.body)["eventId"] for a in answers] == [event_id_of(b) for b in bodies]
    assert calls <= 3 and opened == 1
    assert sync.llen(prefix + "q") == 100
    sync.close()


def test_a_full_backlog_is_logged_at_most_every_ten_seconds(caplog):
    from heroku.ingest import BACKLOG_FULL, BacklogLog

    now = [100.0]
    said = BacklogLog(clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="dtconnector"):
        said.refused([0, BACKLOG_FULL, BACKLOG_FULL], 5)
        now[0] += 9.9
        said.refused([BACKLOG_FULL], 5)
        said.refused([0, 1], 5)
        now[0] += 0.2
        said.refused([BACKLOG_FULL], 5)
    assert [r.getMessage() for r in caplog.records] == [
        "backlog over DT_MAX_BACKLOG: answering 503 until the worker catches up"] * 2
