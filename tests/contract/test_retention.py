"""Bounded storage, every platform: what a deployment keeps grows with its dedup window,
not with its age (core.retention), and a requeued dead letter never re-runs a finished
handler however late it comes within its retention.

Time is moved by a fake clock (time-machine: every clock in the test process, the entry
points, the SDK clients and moto included), never slept through. With a dedup window of a
few seconds, events are delivered over several windows. Where a sweeper removes expired
records (SQLite, Table Storage, Cloudant), the records stored stay within one window's
events plus one state record per (device, event type). Where the store's own TTL removes
them (DynamoDB, Firestore, Redis), a fake clock cannot fire it (moto and the Firestore
emulator never do at all), so the suite checks what the TTL reads instead: every stored
record carries an expiry inside the window (`record_expiries`, which refuses a table whose
TTL is not enabled), and reads treat an expired record as absent. In both cases a
duplicate inside the window is a 200 and the same id after the window is a new event.
"""

from __future__ import annotations

import time

import time_machine

from tests.dt import event_body, event_id_of, signed

#: The dedup window in these tests. The clock is moved past it, so its length costs
#: nothing; it only has to outlast one window's real work (delivering and draining four
#: events took 4.4 s on Azure with the machine overloaded: a 4 s window then expired early).
TTL_S = 60.0
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


def test_storage_is_bounded_by_the_dedup_window(make_platform, seen):
    """One check per platform: where a sweeper removes expired records, count them; where
    the store's own TTL does, check what it reads."""
    platform = make_platform(DT_DEDUP_TTL_S=str(TTL_S))
    with time_machine.travel(time.time(), tick=True) as clock:
        if platform.ttl_never_fires:
            every_record_carries_an_expiry_inside_the_window(platform, seen, clock)
        else:
            stored_records_stay_within_one_dedup_window(platform, seen, clock)


def stored_records_stay_within_one_dedup_window(platform, seen, clock) -> None:
    first: list[bytes] = []
    for window in range(WINDOWS):
        bodies = _deliver_window(platform, window)
        first = first or bodies
        # Inside the window: a duplicate is still a 200, and the cleanup keeps it.
        platform.sweep()
        assert platform.deliver(bodies[0], signed(bodies[0])).status == 200
        stored = platform.stored_records()
        assert stored["events"] <= RECORDS_PER_EVENT * PER_WINDOW, stored  # earlier windows are gone
        assert stored["events"] >= PER_WINDOW, stored  # ... and this one is still there
        assert stored["state"] == len(DEVICES), stored  # one per (device, event type)
        clock.shift(TTL_S + 0.5)  # past the last ledger entry's window, written just now
    platform.sweep()
    assert platform.stored_records() == {"events": 0, "state": len(DEVICES)}
    # The same id after the window is a new event, handled again.
    assert platform.deliver(first[0], signed(first[0])).status == 202
    platform.drain()
    handled = [e.event_id for e in seen]
    assert len(handled) == WINDOWS * PER_WINDOW + 1
    assert handled.count(event_id_of(first[0])) == 2


def every_record_carries_an_expiry_inside_the_window(platform, seen, clock) -> None:
    before = time.time()
    bodies = _deliver_window(platform, 0)
    after = time.time()
    expiries = platform.record_expiries()
    assert len(expiries) == RECORDS_PER_EVENT * PER_WINDOW
    for at in expiries:  # the TTL attribute is whole seconds on DynamoDB, Redis's has a 1 s floor: allow 1 s
        assert before + TTL_S - 1 <= at <= after + TTL_S + 1, (at, before, after)
    assert platform.deliver(bodies[0], signed(bodies[0])).status == 200
    assert platform.stored_records()["state"] == len(DEVICES)
    clock.shift(after - time.time() + TTL_S + 0.5)
    # The records are still stored (the TTL has not fired) but count as absent.
    assert platform.deliver(bodies[0], signed(bodies[0])).status == 202
    platform.drain()
    assert [e.event_id for e in seen].count(event_id_of(bodies[0])) == 2


# --- requeued dead letters (core.retention's rule covers them) ---------------------------

HOUR = 3600.0
DAY = 24 * HOUR


def _ledger_kept(platform, key: str) -> bool:
    """The worker's ledger entry is still there for a requeue to find: the cleanup ran
    (`sweep`) and left it, and where the store's own TTL removes records, that TTL (which
    a fake clock cannot fire) is still ahead."""
    platform.sweep()
    expiry = platform.native_expiry(key)
    return platform.claim_store.get(key) is not None and (expiry is None or expiry > time.time())


def test_a_requeued_dead_letter_never_reruns_a_finished_handler(platform):
    """Issue 24's reproduction, with a fake clock: `kept` succeeds, `flaky` fails until it
    is fixed, the event is dead-lettered. Requeued two days later (after a restart and a
    cleanup) and again just inside the dead letter's retention, `kept` never runs again;
    a further copy found later still is a duplicate; only after the rule's rerun window
    is the ledger entry removable, so storage still does not grow with age."""
    from core import on
    from core.keys import store_key
    from core.retention import Retention
    from core.worker import WORKER_NAMESPACE

    runs: list[str] = []
    fixed: list[bool] = []

    @on("temperature")
    def kept(event):
        runs.append("kept")

    @on("temperature")
    def flaky(event):
        if not fixed:
            raise RuntimeError("flaky is not fixed yet")
        runs.append("flaky")

    rule = Retention.from_env()  # the deployment's default: 14 days of dead letters
    body = event_body(device="d-requeue")
    event_id = event_id_of(body)
    ledger = store_key(event_id, WORKER_NAMESPACE)
    with time_machine.travel(time.time(), tick=True) as clock:
        assert platform.deliver(body, signed(body)).status == 202
        platform.drain()
        assert (runs, platform.dead_letters()) == (["kept"], [event_id])

        # Two days on, past the old one-day grace: restarted, cleaned up, requeued; flaky still fails.
        clock.shift(2 * DAY)
        platform.restart()
        assert _ledger_kept(platform, ledger)
        assert platform.requeue_dead_letters() == 1
        platform.drain()
        assert (runs, platform.dead_letters()) == (["kept"], [event_id])

        # An hour before that dead letter's retention ends: flaky fixed, requeued, only flaky runs.
        clock.shift(rule.dead_letter_s - HOUR)
        platform.restart()
        assert _ledger_kept(platform, ledger)
        fixed.append(True)
        assert platform.requeue_dead_letters() == 1
        platform.drain()
        assert (runs, platform.dead_letters(), platform.queue_depth()) == (["kept", "flaky"], [], 0)

        # A copy dead-lettered alongside and requeued later still (another delivery of the
        # same event) finds it done: a completion after a failure is remembered that long.
        clock.shift(rule.dead_letter_s - HOUR)
        assert _ledger_kept(platform, ledger)
        platform.inject_message(body.decode())
        platform.drain()
        assert runs == ["kept", "flaky"]

        # Past the rerun window nothing can run it again: the entry may go.
        clock.shift(rule.rerun_window_s)
        assert not _ledger_kept(platform, ledger)
