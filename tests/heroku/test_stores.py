"""The Redis ports beyond the shared contract: 1 ns versions, expiry, error translation."""

from __future__ import annotations

import random
import time

import pytest
import redis

from core.claims import Claims
from core.ports import COMPLETED, IN_PROGRESS, Claim, DeviceState, QueueError, StoreError
from core.retention import Retention

RERUN_WINDOW_S = Retention().rerun_window_s  # the default rule: 14 days of dead letters + 1 day
from heroku.connection import connect
from heroku.stores import EXPIRY_MARGIN_S, encode_version

NS = 1_795_000_000_000_000_000  # 2026-11 in ns: well past 2**53, where doubles lose 1 ns


def _state(version: int, event_id: str) -> DeviceState:
    return DeviceState("dev-ns", "temperature", version, event_id, "ts", {"v": event_id})


def test_versions_one_nanosecond_apart_are_ordered_exactly(h):
    assert float(NS) == float(NS + 1)  # what a Lua number comparison would see
    store = h.state_store
    assert store.put_if_newer(_state(NS + 1, "b")) is True
    assert store.put_if_newer(_state(NS, "a")) is False
    assert store.put_if_newer(_state(NS + 1, "b-again")) is False
    assert store.put_if_newer(_state(NS + 2, "c")) is True
    [got] = store.get_device("dev-ns")
    assert got.version == NS + 2 and got.event_id == "c"


def test_encoded_versions_sort_like_the_integers():
    rng = random.Random(3)
    values = [-(2**63), -1, 0, 1, NS - 1, NS, NS + 1, 2**63 - 1] + [rng.randrange(-(2**63), 2**63) for _ in range(300)]
    encoded = [encode_version(v) for v in values]
    assert {len(e) for e in encoded} == {20}
    assert sorted(values) == [values[encoded.index(e)] for e in sorted(encoded)]
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError):
            encode_version(bad)


def test_state_of_other_types_and_devices_is_untouched(h):
    store = h.state_store
    store.put_if_newer(DeviceState("d1", "co2", NS, "e1", "ts", {"co2": {"ppm": 1}}, {"room": "é"}))
    store.put_if_newer(DeviceState("d1", "touch", NS - 5, "e2", "ts", {}))
    store.put_if_newer(DeviceState("d2", "co2", NS + 5, "e3", "ts", {}))
    got = {s.event_type: s for s in store.get_device("d1")}
    assert set(got) == {"co2", "touch"}
    assert got["co2"].labels == {"room": "é"}


def test_redis_expires_a_claim_when_nobody_needs_it_any_more(h):
    client = redis.Redis.from_url(h.url)
    now = time.time()
    # Completed: gone when its dedup window ends.
    assert h.claim_store.create("k-done", Claim(COMPLETED, now + 10, "v1"))
    assert 8_000 < client.pttl(h.prefix + "c:k-done") <= 10_000
    # Unfinished: kept a day past its lease, for the redelivery that needs its progress.
    assert h.claim_store.create("k-ttl", Claim(IN_PROGRESS, now + 10, "v1"))
    pttl = client.pttl(h.prefix + "c:k-ttl")
    assert (10 + RERUN_WINDOW_S - 2) * 1000 < pttl <= (10 + RERUN_WINDOW_S + 1) * 1000
    # A claim already past its expiry is still stored (and reported expired by core):
    assert h.claim_store.create("k-past", Claim(IN_PROGRESS, now - 5, "v1", ("mod.h",)))
    assert h.claim_store.get("k-past").done == ("mod.h",)
    assert h.claim_store.create("k-past-done", Claim(COMPLETED, now - 5, "v1"))
    assert 0 < client.pttl(h.prefix + "c:k-past-done") <= EXPIRY_MARGIN_S * 1000 + 50  # ms rounding, clocks
    client.close()


def test_abandoned_worker_lease_keeps_its_progress_for_the_redelivery(h):
    claims = Claims(h.claim_store, "w")
    _, held = claims.acquire("evt-1", 300)
    held = claims.record_progress(held, "mod.first")
    assert claims.abandon(held)
    outcome, again = claims.acquire("evt-1", 300)
    assert again is not None and again.done == ("mod.first",)


@pytest.mark.parametrize("part", ["claims", "queue", "state"])
def test_unreachable_redis_raises_store_errors_chained_and_without_the_url(h, part):
    secret_url = "redis://:hunter2-password@127.0.0.1:{}/0"
    dead = connect(secret_url.format(h.dead_client().connection_pool.connection_kwargs["port"]))
    adapter = {"claims": h.claim_store, "queue": h.queue, "state": h.state_store}[part]
    adapter.client = dead
    calls = {
        "claims": [
            lambda: adapter.create("k", Claim(IN_PROGRESS, time.time() + 5, "v")),
            lambda: adapter.get("k"),
            lambda: adapter.replace("k", "v", Claim(IN_PROGRESS, time.time() + 5, "w")),
            lambda: adapter.delete("k", "v"),
            lambda: adapter.create_many([("k", Claim(IN_PROGRESS, time.time() + 5, "v"))]),
            lambda: adapter.replace_many([("k", "v", Claim(IN_PROGRESS, time.time() + 5, "w"))]),
        ],
        "queue": [lambda: adapter.enqueue("{}", event_id="e"), lambda: adapter.take("w1"), lambda: adapter.depth()],
        "state": [lambda: adapter.put_if_newer(_state(NS, "e")), lambda: adapter.put_many_if_newer([_state(NS, "e")]),
                  lambda: adapter.get_device("d")],
    }[part]
    started = time.monotonic()
    for call in calls:
        with pytest.raises(StoreError) as info:
            call()
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert "hunter2" not in str(info.value) and "127.0.0.1" not in str(info.value)
        if part == "queue":
            assert isinstance(info.value, QueueError)
    assert time.monotonic() - started < 5  # a bounded retry, not redis-py's default 10 retries


def test_a_batch_of_claims_is_created_and_completed_in_one_round_trip_each(h):
    """`create_many` and `replace_many` (core's `Worker.begin_batch` and `finish_batch`):
    per claim whether it was written, as `create` and `replace` would say one by one."""
    store, now = h.claim_store, time.time()
    assert store.create("known", Claim(IN_PROGRESS, now + 60, "v0"))
    records = [(f"new-{i}", Claim(IN_PROGRESS, now + 60, f"v{i}")) for i in range(3)]
    created = store.create_many(records + [("known", Claim(IN_PROGRESS, now + 60, "x")), ("new-0", Claim(IN_PROGRESS, now + 60, "y"))])
    assert created == [True, True, True, False, False]
    assert store.get("new-0").version == "v0" and store.get("known").version == "v0"
    done = Claim(COMPLETED, now + 600, "w", ("mod.h",))
    replaced = store.replace_many([("new-0", "v0", done), ("new-1", "stale", done), ("missing", "v", done)])
    assert replaced == [True, False, False]
    assert store.get("new-0") == done and store.get("new-1").version == "v1" and store.get("missing") is None
    assert store.create_many([]) == [] and store.replace_many([]) == []


def test_a_batch_of_device_states_keeps_the_newest_of_each_in_one_round_trip(h):
    """`put_many_if_newer` writes in order, so a device repeating in a batch ends with its
    newest event, and an older one than stored is skipped: how many were written."""
    store = h.state_store
    assert store.put_if_newer(_state(NS + 5, "stored"))
    other = DeviceState("dev-other", "touch", NS, "o", "ts", {})
    assert store.put_many_if_newer([_state(NS + 6, "b"), _state(NS + 4, "older"), other, _state(NS + 7, "c")]) == 3
    [got] = store.get_device("dev-ns")
    assert got.event_id == "c"
    assert [s.event_id for s in store.get_device("dev-other")] == ["o"]
    assert store.put_many_if_newer([]) == 0


def test_a_dead_workers_begun_claims_expire_when_its_messages_are_recovered(h):
    """A worker lists the claims its batch began (`hold_in`); once its heartbeat has
    expired, `recover` expires those still in progress (new version, finished handlers
    kept) and leaves a completed one alone, so the redelivery takes over at once."""
    from heroku.queue import RedisQueue

    queue = RedisQueue(redis.Redis.from_url(h.url), h.prefix)
    store, now = h.claim_store, time.time()
    store.hold_in(queue.held_key("dead-worker"))
    queue.register("dead-worker", 60)
    created = store.create_many([("w_a", Claim(IN_PROGRESS, now + 300, "va", ("mod.first",))),
                                 ("w_b", Claim(IN_PROGRESS, now + 300, "vb")), ("w_c", Claim(IN_PROGRESS, now + 300, "vc"))])
    assert created == [True, True, True]
    assert store.replace("w_c", "vc", Claim(COMPLETED, now + 600, "vc2"))
    queue.recover()
    assert store.get("w_a").expires_at > now + 200  # its heartbeat is alive: nothing happens
    queue.client.delete(queue.heartbeat_key("dead-worker"))
    queue.recover()
    a, b, c = store.get("w_a"), store.get("w_b"), store.get("w_c")
    assert a.status == IN_PROGRESS and a.expires_at <= time.time() and a.version != "va" and a.done == ("mod.first",)
    assert b.expires_at <= time.time() and b.version not in ("vb", a.version) and b.done == ()
    assert c == Claim(COMPLETED, now + 600, "vc2")
    assert not queue.client.exists(queue.held_key("dead-worker"))
    outcome, held = Claims(store, "").acquire("b", 60)  # core's state machine takes it over
    assert outcome.name == "CLAIMED" and held.claim.version != b.version
