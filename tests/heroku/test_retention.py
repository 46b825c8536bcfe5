"""Bounded storage on Redis: dead letters past their retention are trimmed by the worker,
and the dead-letter command reports the store's size."""

from __future__ import annotations

import json

from core import on
from heroku import worker as worker_mod
from heroku.report import store_report
from tests.dt import event_body, event_id_of, signed


def _dead(h, n: int) -> list[bytes]:
    @on("*")
    def broken(event):
        raise RuntimeError("bug")

    bodies = [event_body(device=f"d{i}") for i in range(n)]
    for body in bodies:
        assert h.deliver(body, signed(body)).status == 202
    h.drain()
    return bodies


def test_dead_letters_past_their_retention_are_trimmed_oldest_first(h, monkeypatch):
    bodies = _dead(h, 3)
    client = h.queue.client
    # Age the first two dead letters by 3 days.
    for index in (0, 1):
        record = json.loads(client.lindex(h.queue.dead_key, index))
        record["deadAt"] -= 3 * 86_400
        client.lset(h.queue.dead_key, index, json.dumps(record))
    assert h.queue.expire_dead_letters(retention_s=2 * 86_400, limit=1) == 1  # bounded
    assert h.queue.expire_dead_letters(retention_s=2 * 86_400) == 1
    assert h.dead_letters() == [event_id_of(bodies[2])]


def test_the_worker_trims_dead_letters_with_the_configured_retention(h, monkeypatch):
    _dead(h, 1)
    monkeypatch.setenv("DT_DEAD_LETTER_RETENTION_S", "0")
    worker_mod.QueueWorker.from_env().run(burst=True)
    assert h.dead_letters() == []


def test_dead_letter_command_reports_the_store_size(h, capsys):
    _dead(h, 1)
    assert worker_mod.main(["--dead-letters"]) == 0
    err = capsys.readouterr().err
    report = json.loads(err.split("store: ", 1)[1])
    assert report["records"]["dead_letters"] == 1
    assert report["records"]["claims"] == 1 and report["records"]["ledger"] == 1
    assert "dead_letters" in report["oldest"]
    assert store_report(h.queue.client, h.prefix).counts["device_state"] == 1
