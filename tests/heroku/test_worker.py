"""The worker's queue semantics, in-process: attempts, in-flight events, orphan recovery,
dead letters and the dead-letter commands."""

from __future__ import annotations

import json
import time

import redis

from core import on
from core.keys import store_key
from core.ports import IN_PROGRESS, Claim
from heroku import worker as worker_mod
from heroku.worker import QueueWorker
from tests.dt import event_body, event_id_of, signed


def _accept(h, body):
    assert h.deliver(body, signed(body)).status == 202


def test_event_held_by_another_worker_waits_without_using_attempts(h):
    body = event_body()
    _accept(h, body)
    ledger_key = store_key(event_id_of(body), "w")
    h.claim_store.create(ledger_key, Claim(IN_PROGRESS, time.time() + 300, "other-worker"))
    runner = QueueWorker.from_env()
    runner.in_flight_delay_s = 60
    for _ in range(h.max_attempts + 2):
        runner.run(burst=True)
    client = redis.Redis.from_url(h.url)
    [(raw, due)] = client.zrange(h.prefix + "delayed", 0, -1, withscores=True)
    assert due > time.time() + 50
    assert int(client.hget(h.prefix + "attempts", raw[:32]) or 0) == 0
    assert h.dead_letters() == [] and h.queue_depth() == 1
    client.close()


def test_messages_of_a_worker_whose_heartbeat_expired_are_redelivered(h):
    calls = []

    @on("*")
    def record(event):
        calls.append(event.event_id)

    body = event_body()
    _accept(h, body)
    ghost = "ghost.1"
    h.queue.register(ghost, 60)
    assert len(h.queue.take(ghost)) == 1  # taken, then the process was SIGKILLed
    QueueWorker.from_env().run(burst=True)
    assert calls == [] and h.queue_depth() == 1  # heartbeat still alive: not stolen
    redis.Redis.from_url(h.url).delete(h.queue.heartbeat_key(ghost))  # ... until it expires
    QueueWorker.from_env().run(burst=True)
    assert calls == [event_id_of(body)]
    assert h.queue_depth() == 0


def test_poison_message_is_dead_lettered_at_once(h):
    h.queue.enqueue("this is not a DT event", event_id="x")
    QueueWorker.from_env().run(burst=True)
    [dead] = h.queue.dead_letters()
    assert dead["attempts"] == 1 and dead["error"].startswith("PoisonMessage")
    assert h.queue_depth() == 0


def test_failed_attempts_wait_with_backoff(heroku):
    h = heroku(DT_RETRY_DELAY_S="10")

    @on("*")
    def broken(event):
        raise RuntimeError("down")

    _accept(h, event_body())
    before = time.time()
    QueueWorker.from_env().run(burst=True)  # burst leaves the not-yet-due retry queued
    client = redis.Redis.from_url(h.url)
    [(_, due)] = client.zrange(h.prefix + "delayed", 0, -1, withscores=True)
    assert before + 9 < due < time.time() + 11
    assert h.dead_letters() == []
    client.close()


def test_dead_letter_commands_list_and_requeue(h, capsys):
    @on("*")
    def broken(event):
        raise RuntimeError("bug")

    body = event_body()
    _accept(h, body)
    h.drain()
    assert worker_mod.main(["--dead-letters"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"deadAt"' in line]
    assert [d["eventId"] for d in lines] == [event_id_of(body)]
    assert lines[0]["attempts"] == h.max_attempts and lines[0]["error"].startswith("HandlerFailed")
    assert worker_mod.main(["--requeue-dead-letters"]) == 0
    assert h.dead_letters() == [] and h.queue_depth() == 1


# -- batches ----------------------------------------------------------------------------


class Died(BaseException):
    """A kill -9 in the middle of a handler: nothing after it runs, no cleanup."""


def _counting(queue):
    """Count the worker's take and ack round trips."""
    counts = {"take": 0, "ack": 0}
    for name in counts:
        real = getattr(queue, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        setattr(queue, name, counted)
    return counts


def test_fast_handlers_are_taken_and_acknowledged_in_batches(h):
    done = []

    @on("*")
    def record(event):
        done.append(event.event_id)

    bodies = [event_body() for _ in range(40)]
    for body in bodies:
        _accept(h, body)
    runner = QueueWorker.from_env()
    counts = _counting(runner.queue)
    runner.run(burst=True)
    assert sorted(done) == sorted(event_id_of(b) for b in bodies)
    assert h.queue_depth() == 0
    # 1, 2, 4, 8, 16, 9 messages per batch, plus the take that finds the queue empty
    assert counts["take"] <= 10 and counts["ack"] <= 9, counts


def _round_trips(client, monkeypatch) -> list[str]:
    """The commands `client` sends from now on, each a round trip (no pipelines here)."""
    sent: list[str] = []
    real = client.execute_command

    def counted(*args, **options):
        sent.append(str(args[0]))
        return real(*args, **options)

    monkeypatch.setattr(client, "execute_command", counted)
    return sent


def test_a_batch_costs_one_round_trip_per_handler_and_three_for_the_batch(h, monkeypatch):
    """The ledger claims, the device states and the completions of a batch are one script
    each (`Worker.begin_batch`, `finish_batch`); each finished handler is recorded as it
    finishes (one round trip each: a crash re-runs at most the one not yet recorded). 16
    events with one handler: 16 + 3 round trips and the acknowledgement, where one event
    at a time made 3 each (48 + 1)."""
    from heroku import runtime

    ran = []

    @on("*")
    def record(event):
        ran.append(event.event_id)

    runner = QueueWorker.from_env()
    runner.queue.register(runner.id, 60)
    for size in (2, 16):  # the first batch loads the scripts into Redis
        bodies = [event_body(device=f"d{i}") for i in range(size)]
        for body in bodies:
            _accept(h, body)
        batch = runner.queue.take(runner.id, most=size)
        sent = _round_trips(runtime.redis(), monkeypatch)
        runner._process(batch)
    assert len(sent) == 16 + 3 + 1, sent
    assert sorted(ran[-16:]) == sorted(event_id_of(b) for b in bodies) and h.queue_depth() == 0
    assert len(h.state_store.get_device("d3")) == 1


def test_the_batch_size_doubles_while_fast_and_falls_back_when_slow(h):
    runner = QueueWorker.from_env()
    runner.max_batch = 16
    grow = [runner._next_batch_size(n, n, 0.01) for n in (1, 2, 4, 8, 16)]
    assert grow == [2, 4, 8, 16, 16]
    assert runner._next_batch_size(8, 3, 0.01) == 8  # the queue ran short: no evidence either way
    assert [runner._next_batch_size(n, n, 0.5) for n in (16, 8, 1)] == [8, 4, 1]  # a slow handler


def test_a_worker_killed_mid_batch_reruns_no_finished_handler(h):
    """Three messages taken in one batch; the worker dies in the second one's handler.
    The first finished but was not acknowledged (that happens at the end of a batch), the
    third never started. After the heartbeat expires, the next worker gets all three: the
    first is a no-op (the ledger says done), the second and third run once to completion."""
    starts, finished = [], []
    bodies = [event_body(device=f"d{i}") for i in range(3)]
    doomed = event_id_of(bodies[1])

    @on("*")
    def handler(event):
        starts.append(event.event_id)
        if event.event_id == doomed and starts.count(doomed) == 1:
            raise Died()
        finished.append(event.event_id)

    for body in bodies:
        _accept(h, body)
    dying = QueueWorker.from_env()
    h.queue.register(dying.id, 60)
    batch = h.queue.take(dying.id, most=3)
    assert [m.event_id for m in batch] == [event_id_of(b) for b in bodies]
    try:
        dying._process(batch)
    except Died:
        pass
    assert finished == [event_id_of(bodies[0])]
    assert h.queue_depth() == 3  # all three still in the dead worker's processing list
    redis.Redis.from_url(h.url).delete(h.queue.heartbeat_key(dying.id))  # its heartbeat expires
    QueueWorker.from_env().run(burst=True)
    ids = [event_id_of(b) for b in bodies]
    assert sorted(finished) == sorted(ids)  # each finished exactly once
    assert starts.count(ids[0]) == 1 and starts.count(ids[1]) == 2 and starts.count(ids[2]) == 1
    assert h.queue_depth() == 0 and h.dead_letters() == []


def test_a_stop_mid_batch_puts_the_rest_back_uncounted(h):
    ran = []
    bodies = [event_body(device=f"d{i}") for i in range(3)]
    runner = QueueWorker.from_env()

    @on("*")
    def handler(event):
        ran.append(event.event_id)
        runner.stop()  # SIGTERM arrives while the first message runs

    for body in bodies:
        _accept(h, body)
    runner.queue.register(runner.id, 60)
    runner._process(runner.queue.take(runner.id, most=3))
    runner.queue.unregister(runner.id)
    assert ran == [event_id_of(bodies[0])]
    assert h.queue_depth() == 2
    client = redis.Redis.from_url(h.url)
    assert not any(int(v) for v in client.hvals(h.prefix + "attempts"))  # neither delivery counted
    client.close()
    QueueWorker.from_env().run(burst=True)
    assert sorted(ran) == sorted(event_id_of(b) for b in bodies)
