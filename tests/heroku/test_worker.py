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
    assert h.queue.take(ghost) is not None  # taken, then the process was SIGKILLed
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
