"""Worker scenarios every platform must pass: idempotency, retries, dead letters, state."""

from __future__ import annotations

import random

from core import on
from tests.dt import event_body, event_id_of, signed


def _accept(platform, body):
    assert platform.deliver(body, signed(body)).status == 202


def test_redelivered_message_does_not_run_completed_handlers_again(platform, seen):
    body = event_body()
    _accept(platform, body)
    platform.drain()
    platform.inject_message(body.decode())  # the queue delivers the same message again
    platform.drain()
    assert len(seen) == 1
    assert platform.queue_depth() == 0
    assert platform.dead_letters() == []


def test_failing_handler_is_retried_and_finished_handlers_are_not_rerun(platform):
    calls = {"first": 0, "flaky": 0}

    @on("temperature")
    def first(event):
        calls["first"] += 1

    @on("temperature")
    def flaky(event):
        calls["flaky"] += 1
        if calls["flaky"] < platform.max_attempts:
            raise RuntimeError("downstream API is down")

    _accept(platform, event_body())
    platform.drain()
    assert calls == {"first": 1, "flaky": platform.max_attempts}
    assert platform.dead_letters() == []
    assert platform.queue_depth() == 0


def test_always_failing_handler_is_dead_lettered_after_bounded_attempts(platform):
    calls = {"ok": 0, "broken": 0}

    @on("*")
    def ok(event):
        calls["ok"] += 1

    @on("*")
    def broken(event):
        calls["broken"] += 1
        raise ValueError("bug in user code")

    bad = event_body()
    _accept(platform, bad)
    platform.drain()
    assert platform.dead_letters() == [event_id_of(bad)]
    assert calls == {"ok": 1, "broken": platform.max_attempts}
    assert platform.queue_depth() == 0


def test_only_the_failing_event_is_dead_lettered(platform):
    @on("*")
    def picky(event):
        if event.device_id == "bad-device":
            raise RuntimeError("cannot handle this one")

    good, bad = event_body(device="good-device"), event_body(device="bad-device")
    _accept(platform, good)
    _accept(platform, bad)
    platform.drain()
    assert platform.dead_letters() == [event_id_of(bad)]


def test_state_store_failure_never_drops_the_message(platform, seen):
    """Our own store failing on every delivery: the message is retried like any failure and
    ends in the dead-letter queue, never acknowledged and lost."""
    body = event_body(device="d-state-fail")
    _accept(platform, body)
    with platform.broken("state"):
        platform.drain()
    assert platform.dead_letters() == [event_id_of(body)]
    assert seen == []  # state is recorded before handlers run
    assert platform.device_state("d-state-fail") == {}


def test_device_state_keeps_the_newest_event_whatever_the_arrival_order(platform):
    stamps = [f"2026-11-22T10:00:{s:02d}.{f:09d}Z" for s in range(0, 6) for f in (0, 1, 999999999)]
    bodies = {
        ts: event_body("temperature", device="d-order", timestamp=ts, data={"temperature": {"value": i}})
        for i, ts in enumerate(stamps)
    }
    order = list(bodies.items())
    random.Random(7).shuffle(order)
    for _, body in order:
        _accept(platform, body)
    platform.drain()
    newest = max(stamps)
    state = platform.device_state("d-order")["temperature"]
    assert state.timestamp == newest
    assert state.event_id == event_id_of(bodies[newest])
    assert state.data == {"temperature": {"value": len(stamps) - 1}}


def test_state_compares_parsed_timestamps_not_strings(platform):
    # Same instant written differently, and a 9-digit stamp 1 ns after a 6-digit one.
    earlier = event_body("co2", device="d-ns", timestamp="2026-11-22T10:00:00.000001Z", data={"co2": {"ppm": 1}})
    later = event_body("co2", device="d-ns", timestamp="2026-11-22T10:00:00.000001001Z", data={"co2": {"ppm": 2}})
    _accept(platform, later)
    _accept(platform, earlier)
    platform.drain()
    assert platform.device_state("d-ns")["co2"].data == {"co2": {"ppm": 2}}


def test_state_is_per_device_and_event_type(platform):
    _accept(platform, event_body("temperature", device="a", timestamp="2026-11-22T10:00:01Z"))
    _accept(platform, event_body("co2", device="a", timestamp="2026-11-22T10:00:00Z", data={"co2": {"ppm": 5}}))
    _accept(platform, event_body("temperature", device="b", timestamp="2026-11-22T09:00:00Z"))
    platform.drain()
    assert set(platform.device_state("a")) == {"temperature", "co2"}
    assert set(platform.device_state("b")) == {"temperature"}
