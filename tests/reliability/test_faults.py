"""Faults at each step of the pipeline, on every platform, driven with DT-like retries.

Each test ends with the same end-state check (`reliability.workload.check`):
- every unique event's handlers completed exactly once (the one stated exception: a worker
  that dies after a handler returned but before the ledger recorded it runs that handler,
  and only that one, once more on redelivery: `test_worker_dies_between_handler_and_ledger`);
- each device's state per event type is the newest event (by timestamp);
- the dead-lettered events are exactly those whose handler always fails;
- nothing is left on the queue.
"""

from __future__ import annotations

import time

import pytest

from core import on
from core.claims import Claims
from core.ports import StoreError
from core.keys import store_key
from core.worker import WORKER_NAMESPACE, Worker
from reliability import workload
from reliability.inproc import ProcessDied, deliver_all, deliver_until_acked, event_id, state_snapshot
from tests.dt import SECRET, signed

from .conftest import LEASE_WAIT_S


def finish(platform, w: workload.Workload, probe, *, may_repeat=()) -> None:
    platform.drain()
    assert platform.queue_depth() == 0
    problems = workload.check(
        w, probe.completed, state_snapshot(platform, w.devices), platform.dead_letters(), may_repeat=may_repeat
    )
    assert problems == []


class WorkerExited(RuntimeError):
    """What a platform's trigger sees when the worker process it invoked vanished: a
    failed invocation (the Functions host, Pub/Sub's push, Lambda's event source mapping
    all outlive the worker process and redeliver)."""


#: How a worker crash is modelled.
#: - "runtime": everything in this process dies, the trigger included (the exception
#:   escapes `drain()`); the next `drain()` is the restarted runtime.
#: - "worker": only the worker process dies; the trigger survives, sees a failed
#:   invocation and redelivers after its retry delay, which deployments keep longer than
#:   the worker lease (here: the lease, 0.2 s, then the redelivery).
CRASH_MODELS = ("runtime", "worker")
#: Platforms whose trigger is always a separate, surviving process (the Functions host,
#: Pub/Sub push): their harness holds a message whose invocation never returned for the
#: full visibility timeout / ack deadline (300 s, 600 s), as the real service would if
#: the *host* died. Their worker crash is the "worker" model.
SEPARATE_TRIGGER = {"azure", "gcp"}


@pytest.fixture(params=CRASH_MODELS)
def crash_model(request, stand_in, monkeypatch):
    if request.param == "runtime" and stand_in.name in SEPARATE_TRIGGER:
        pytest.skip(f"{stand_in.name}'s trigger outlives the worker process: covered by the 'worker' crash model")
    if request.param == "worker":
        real = Worker.process

        def process(self, message):
            try:
                return real(self, message)
            except ProcessDied:
                time.sleep(LEASE_WAIT_S)
                raise WorkerExited("the worker process exited during the invocation") from None

        monkeypatch.setattr(Worker, "process", process)
    return request.param


def drain_until(platform, done, timeout_s: float = 20.0) -> None:
    """Drain (the platform's trigger) until `done()`; a crash escaping the worker is the
    process dying: the next drain is the restarted process, after the worker lease."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            platform.drain()
        except (ProcessDied, WorkerExited):
            pass
        if done():
            return
        assert time.monotonic() < deadline, "the event was never redelivered after the worker died"
        time.sleep(LEASE_WAIT_S)


class _OneShot:
    """Wraps a method so it raises `exc` once per claim key (the first time it is called
    for that key), then behaves normally: a fault that a retry gets past."""

    def __init__(self, real, exc_factory, when=lambda self, held, *a: True):
        self.real, self.exc_factory, self.when = real, exc_factory, when
        self.hit: set[str] = set()

    def __get__(self, obj, owner):
        def method(held, *args, **kwargs):
            if held.key not in self.hit and self.when(obj, held, *args):
                self.hit.add(held.key)
                raise self.exc_factory()
            return self.real(obj, held, *args, **kwargs)

        return method


# --- ingest ------------------------------------------------------------------------------


def test_store_failing_on_claim_answers_503_and_dt_retry_succeeds(platform, probe):
    w = workload.make(5, devices=2, seed=11)
    for body in w.unique[:2]:
        with platform.broken("claims"):
            reply = platform.deliver(body, signed(body))
        assert reply.status == 503
    assert platform.queue_depth() == 0
    deliveries = deliver_all(platform, w.deliveries, SECRET)
    assert {d.status for d in deliveries} <= {200, 202}
    assert sum(d.status == 202 for d in deliveries) == len(w.unique)
    finish(platform, w, probe)


def test_queue_failing_after_claim_releases_the_claim_for_dt_retry(platform, probe):
    # Default 8 s claim lease: the retry right after the outage gets 202 only because the
    # failed request released its claim instead of leaving it to expire.
    w = workload.make(5, devices=2, seed=12)
    failed = w.unique[:2]
    for body in failed:
        with platform.broken("queue"):
            assert platform.deliver(body, signed(body)).status == 503
    assert platform.queue_depth() == 0
    for body in failed:
        assert platform.deliver(body, signed(body)).status == 202
    deliveries = deliver_all(platform, w.deliveries, SECRET)
    assert sum(d.status == 202 for d in deliveries) == len(w.unique) - len(failed)
    assert platform.queue_depth() == len(w.unique)
    finish(platform, w, probe)


class _DiesAfterOutboxWrite:
    """`Claims.acquire` that, once per event, dies right after an `AtomicOutbox` stored
    the claim and the message in their one write (before anything is answered)."""

    def __init__(self, real):
        self.real, self.hit = real, set()

    def __get__(self, obj, owner):
        def method(event_id, *args, **kwargs):
            outcome, held = self.real(obj, event_id, *args, **kwargs)
            if held is not None and held.queued and held.key not in self.hit:
                self.hit.add(held.key)
                raise ProcessDied("killed after the outbox write")
            return outcome, held

        return method


class _DiesAfterScriptWrite:
    """Heroku's web dyno claims and queues in one Redis script (`heroku.ingest`): die once
    per event right after the script stored both, before anything is answered."""

    def __init__(self, real):
        self.real, self.hit = real, set()

    def __call__(self, code, event_id, **options):
        from heroku.ingest import ACCEPTED

        if code == ACCEPTED and event_id not in self.hit:
            self.hit.add(event_id)
            raise ProcessDied("killed after the script's write")
        return self.real(code, event_id, **options)


def test_process_dies_after_enqueue_before_claim_completed(short_lease_platform, stand_in, monkeypatch, probe):
    """The event is queued but the process vanishes before answering. DT got no answer and
    retries. With a plain queue the claim was never marked completed: 503 while the dead
    claim's lease runs, then 202 (a second copy is queued); the worker's ledger runs the
    handlers once. With an atomic outbox (IBM, local; Heroku's one script) the claim was written completed with
    the message, so there is no such moment: the retry is a 200 duplicate at once."""
    platform = short_lease_platform
    w = workload.make(4, devices=2, seed=13)
    crash = _OneShot(Claims.complete, lambda: ProcessDied("killed after enqueue"))
    outbox_crash = _DiesAfterOutboxWrite(Claims.acquire)
    monkeypatch.setattr(Claims, "complete", crash)
    monkeypatch.setattr(Claims, "acquire", outbox_crash)
    script_crash = None
    if stand_in.name == "heroku":
        import heroku.ingest

        script_crash = _DiesAfterScriptWrite(heroku.ingest.answer_for)
        monkeypatch.setattr(heroku.ingest, "answer_for", script_crash)
    results = [deliver_until_acked(platform, body, SECRET) for body in w.unique]
    monkeypatch.undo()
    atomic = outbox_crash.hit | (script_crash.hit if script_crash else set())
    outbox = bool(atomic)
    assert len(atomic if outbox else crash.hit) == len(w.unique)
    for r in results:
        assert r.attempts[0] is None  # no answer: the process died
        if outbox:
            assert r.attempts == [None, 200]  # already queued and remembered
        else:
            assert r.status == 202  # the retry, once the lease expired, queued it again
            assert set(r.attempts[1:-1]) <= {503}
    if outbox:
        assert platform.queue_depth() == len(w.unique)
    else:  # every event queued twice, unless the platform's queue keys messages by event id
        assert len(w.unique) <= platform.queue_depth() <= 2 * len(w.unique)
    deliver_all(platform, w.deliveries, SECRET)  # later duplicates: remembered as completed
    finish(platform, w, probe)


def test_claim_completion_failing_still_acks_and_a_late_duplicate_is_absorbed(short_lease_platform, monkeypatch, probe):
    platform = short_lease_platform
    w = workload.make(3, devices=1, seed=14)
    crash = _OneShot(Claims.complete, lambda: StoreError("store unreachable at completion"))
    monkeypatch.setattr(Claims, "complete", crash)
    for body in w.unique:
        assert platform.deliver(body, signed(body)).status == 202  # queued durably: 2xx
    monkeypatch.undo()
    # An atomic outbox writes the claim completed with the message: no completion step.
    outbox = not crash.hit
    assert len(crash.hit) in (0, len(w.unique))
    time.sleep(LEASE_WAIT_S)  # the claim was never completed; its lease expires
    for body in w.unique:  # DT duplicates after the lease: queued again, absorbed later
        assert platform.deliver(body, signed(body)).status == (200 if outbox else 202)
    finish(platform, w, probe)


def test_process_dies_after_the_ack_and_dt_retries_a_duplicate(platform, probe):
    """The 202 was sent but never reached DT (connection cut): DT's retry is a duplicate."""
    w = workload.make(4, devices=2, seed=15)
    for body in w.unique:
        assert platform.deliver(body, signed(body)).status == 202  # lost on the way back
        assert platform.deliver(body, signed(body)).status == 200
    finish(platform, w, probe)


# --- worker ------------------------------------------------------------------------------


def test_worker_dies_mid_handler_and_the_event_is_redelivered(short_lease_platform, crash_model, probe):
    """A worker process vanishes inside a handler. After the worker lease expires the
    redelivery runs the unfinished handler again and skips the one that had completed."""
    platform = short_lease_platform
    w = workload.make(3, devices=1, seed=16)
    victim = event_id(w.unique[1])
    after = {"calls": 0, "completed": 0}

    @on("*")
    def second_handler(event):
        if event.event_id == victim:
            after["calls"] += 1
            if after["calls"] == 1:
                raise ProcessDied("worker killed mid-handler")
            after["completed"] += 1

    deliver_all(platform, w.unique, SECRET)
    drain_until(platform, lambda: after["completed"] == 1)
    assert after == {"calls": 2, "completed": 1}
    assert probe.calls[victim] == 1  # the first handler finished before the crash: not rerun
    finish(platform, w, probe)


def test_worker_dies_between_handler_and_ledger(short_lease_platform, crash_model, monkeypatch, probe):
    """The one window exactly-once cannot close: the handler returned, the process died
    before the ledger recorded it. The redelivery runs that handler once more (at most
    once more per crash); every other event still runs exactly once."""
    platform = short_lease_platform
    w = workload.make(3, devices=1, seed=17)
    victim = event_id(w.unique[0])
    # The worker's write that records the handler: its own progress record where the worker
    # batches (the local receiver), else the completion, which records the last handler
    # with it. One crash per event, whichever of the two comes first.
    ledger_key = store_key(victim, WORKER_NAMESPACE)
    hit: set[str] = set()
    for name in ("record_progress", "complete"):
        crash = _OneShot(getattr(Claims, name), lambda: ProcessDied("killed before the ledger write"),
                         when=lambda self, held, *args: held.key == ledger_key)
        crash.hit = hit
        monkeypatch.setattr(Claims, name, crash)
    deliver_all(platform, w.unique, SECRET)
    drain_until(platform, lambda: probe.completed[victim] >= 2)
    monkeypatch.undo()
    assert hit == {ledger_key}
    assert probe.completed[victim] == 2
    finish(platform, w, probe, may_repeat={victim})


def test_handlers_raising_retried_and_only_always_failing_ones_dead_lettered(platform, probe):
    w = workload.make(4, devices=2, poison=2, seed=18)
    flaky_failures: dict[str, int] = {}

    @on("*")
    def flaky(event):  # fails on its first deliveries, then succeeds
        n = flaky_failures.get(event.event_id, 0)
        if n < platform.max_attempts - 1:
            flaky_failures[event.event_id] = n + 1
            raise ConnectionError("downstream API timed out")

    deliver_all(platform, w.deliveries, SECRET)
    finish(platform, w, probe)
    for event in w.healthy_ids:  # the probe ran once though flaky made the event retry
        assert flaky_failures[event] == platform.max_attempts - 1


def test_queue_redelivering_processed_messages_runs_nothing_again(platform, probe):
    w = workload.make(5, devices=2, seed=19)
    deliver_all(platform, w.deliveries, SECRET)
    platform.drain()
    # The queue delivers everything again (some twice), newest first: state must not regress.
    for body in list(reversed(w.unique)) + w.unique[:2]:
        platform.inject_message(body.decode())
    finish(platform, w, probe)
