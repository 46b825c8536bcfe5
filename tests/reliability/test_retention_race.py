"""Cleanup racing ingest and the worker, every platform: the platform's sweeper runs in a
loop while expired events are delivered again (taking over records the sweeper is
removing) and new ones arrive and are processed. Nothing is lost, nothing runs twice.

Where the store's own TTL is the cleanup (DynamoDB, Firestore, Redis) there is no sweeper
of ours to race, and a fake clock cannot fire that TTL: there this checks that expired
records are taken over correctly and that every record a takeover rewrote carries a new
TTL, later than any written before (a stale one would let the cloud delete a live claim).
The dedup window passes on a fake clock (time-machine), not by sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import time_machine

from tests.dt import event_body, event_id_of, signed

TTL_S = 3.0


def test_cleanup_racing_ingest_and_worker_loses_nothing_and_runs_nothing_twice(make_platform, seen):
    platform = make_platform(DT_DEDUP_TTL_S=str(TTL_S))
    with time_machine.travel(time.time(), tick=True) as clock:
        _race(platform, seen, clock)


def _race(platform, seen, clock) -> None:
    sweeps_itself = not platform.ttl_never_fires
    old = [event_body(device=f"race-{i % 3}", timestamp=f"2026-11-22T10:00:{i:02d}.000000Z") for i in range(6)]
    for body in old:
        assert platform.deliver(body, signed(body)).status == 202
    platform.drain()
    # Every record of `old` is now expired, none removed yet; 1.5 s past the window, so that
    # even a TTL rounded up to the whole second (DynamoDB's) is behind `takeovers_began`.
    clock.shift(TTL_S + 1.5)
    # Every TTL from before this moment is stale; a takeover writes one ahead of it. (Not
    # compared with the clock at the end: on a loaded machine the rest of the test can take
    # longer than TTL_S, and a TTL rightly written during it has passed by then.)
    takeovers_began = time.time()

    stop = threading.Event()
    sweeps: list[int] = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        while not stop.is_set():
            try:
                platform.sweep()
                sweeps.append(1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            stop.wait(0.01)

    thread = threading.Thread(target=sweeper)
    if sweeps_itself:
        thread.start()
    try:
        new = [event_body(device=f"race-{i % 3}", timestamp=f"2026-11-22T11:00:{i:02d}.000000Z") for i in range(6)]
        for again, fresh in zip(old, new):
            # After the window the same id is a new event; a 503 ("in flight") is retried as DT would.
            for body in (again, fresh):
                for _ in range(20):
                    status = platform.deliver(body, signed(body)).status
                    if status != 503:
                        break
                    time.sleep(0.1)
                assert status == 202
            platform.drain()
        platform.drain()
    finally:
        stop.set()
        if sweeps_itself:
            thread.join(30)
    assert errors == []
    if sweeps_itself:
        assert sweeps, "the sweeper never ran"
    else:
        expiries = platform.record_expiries()
        assert len(expiries) == 2 * (len(old) + 6)  # ingest claim + ledger entry per delivery
        assert min(expiries) > takeovers_began, "a record kept a TTL from before its takeover"
    assert platform.queue_depth() == 0
    assert platform.dead_letters() == []
    handled = Counter(e.event_id for e in seen)
    assert handled == Counter({**{event_id_of(b): 2 for b in old}, **{event_id_of(b): 1 for b in new}})
    states = platform.device_state("race-0")
    assert states["temperature"].timestamp == "2026-11-22T11:00:03.000000Z"  # the newest of race-0
