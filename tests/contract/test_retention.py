"""Bounded storage, every platform: what a deployment keeps grows with its dedup window,
not with its age (core.retention).

With a dedup window of a couple of seconds, events are delivered over several windows.
Where the store really removes expired records (SQLite and Table Storage and Cloudant
through their sweepers, Redis through key expiry), the records stored stay within one
window's events plus one state record per (device, event type). moto (DynamoDB) and the
Firestore emulator never delete TTL items, so there the suite checks what the cloud's TTL
needs instead: every stored record carries an expiry attribute inside the window (and
`record_expiries` refuses a table whose TTL is not enabled), and reads treat an expired
record as absent. In both cases a duplicate inside the window is a 200 and the same id
after the window is a new event.
"""

from __future__ import annotations

import time

from tests.dt import event_body, event_id_of, signed

#: Long enough for the slowest stand-in to deliver and drain one window inside it.
TTL_S = 4.0
WINDOWS = 3
PER_WINDOW = 4
DEVICES = ("ret-a", "ret-b")
#: Records one handled event leaves: the ingest dedup record (with its outbox entry, on
#: Cloudant) and the worker's ledger entry.
RECORDS_PER_EVENT = 2


def _deliver_window(platform, window: int) -> list[bytes]:
    bodies = [
        event_body("temperature", device=DEVICES[i % len(DEVICES)], timestamp=f"2026-11-22T10:0{window}:{i:02d}.000000Z")
        for i in range(PER_WINDOW)
    ]
    for body in bodies:
        assert platform.deliver(body, signed(body)).status == 202
    platform.drain()
    return bodies


def _wait_past(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()))


def test_storage_is_bounded_by_the_dedup_window(make_platform, seen):
    """One check per platform: where the stand-in removes expired records, count them;
    where it never does (moto, the Firestore emulator), check what the cloud's TTL reads."""
    platform = make_platform(DT_DEDUP_TTL_S=str(TTL_S))
    if platform.ttl_never_fires:
        every_record_carries_an_expiry_inside_the_window(platform, seen)
    else:
        stored_records_stay_within_one_dedup_window(platform, seen)


def stored_records_stay_within_one_dedup_window(platform, seen) -> None:
    first: list[bytes] = []
    for window in range(WINDOWS):
        bodies = _deliver_window(platform, window)
        window_end = time.time() + TTL_S + 0.3  # the last ledger entry was written just now
        first = first or bodies
        # Inside the window: a duplicate is still a 200, and the cleanup keeps it.
        platform.sweep()
        assert platform.deliver(bodies[0], signed(bodies[0])).status == 200
        stored = platform.stored_records()
        assert stored["events"] <= RECORDS_PER_EVENT * PER_WINDOW, stored  # earlier windows are gone
        assert stored["events"] >= PER_WINDOW, stored  # ... and this one is still there
        assert stored["state"] == len(DEVICES), stored  # one per (device, event type)
        _wait_past(window_end)
    platform.sweep()
    assert platform.stored_records() == {"events": 0, "state": len(DEVICES)}
    # The same id after the window is a new event, handled again.
    assert platform.deliver(first[0], signed(first[0])).status == 202
    platform.drain()
    handled = [e.event_id for e in seen]
    assert len(handled) == WINDOWS * PER_WINDOW + 1
    assert handled.count(event_id_of(first[0])) == 2


def every_record_carries_an_expiry_inside_the_window(platform, seen) -> None:
    before = time.time()
    bodies = _deliver_window(platform, 0)
    after = time.time()
    expiries = platform.record_expiries()
    assert len(expiries) == RECORDS_PER_EVENT * PER_WINDOW
    for at in expiries:  # the TTL attribute is whole seconds on DynamoDB: allow 1 s
        assert before + TTL_S - 1 <= at <= after + TTL_S + 1, (at, before, after)
    assert platform.deliver(bodies[0], signed(bodies[0])).status == 200
    assert platform.stored_records()["state"] == len(DEVICES)
    _wait_past(after + TTL_S + 0.3)
    # The records are still stored (the stand-in's TTL never fires) but count as absent.
    assert platform.deliver(bodies[0], signed(bodies[0])).status == 202
    platform.drain()
    assert [e.event_id for e in seen].count(event_id_of(bodies[0])) == 2
