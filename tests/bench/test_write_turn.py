"""`python -m bench.write_turn` (the figure BENCHMARKS.md's closing note quotes) measures
what it says: the worker processed every event and held the write lock for part of it."""

from __future__ import annotations

import os

from bench import receiver_load, write_turn


def test_the_worker_processes_every_event_and_its_write_turns_are_timed(tmp_path, monkeypatch):
    monkeypatch.setenv("DT_SIGNATURE_SECRET", receiver_load.SECRET)
    monkeypatch.setenv("DT_HANDLERS", "bench.append_handler")
    out = tmp_path / "handled"
    monkeypatch.setenv("DT_BENCH_OUT", str(out))
    events = receiver_load.presign(120)
    result = write_turn.measure(events, 25, str(tmp_path))
    assert len(out.read_text().splitlines()) == 120  # every event's handler ran once
    assert result["turns"] >= 120 // 25  # at least one turn on the lock per batch
    assert 0 < result["held_us"] < result["cpu_us"] * 10
    assert os.path.exists(tmp_path / "turn-25.db")
