"""How long the local worker holds the SQLite write lock per event, which the web process's
group commits then wait for (one file, one write lock, two processes):

    python -m bench.write_turn [events] [batch sizes, e.g. 25,64]

Fills a database through `LocalApp` (signed events, the append-one-line handler of section
2), then lets a `LocalWorker` process it with `run_forever` at each batch size, and prints
per event: the worker's CPU, and the time between it taking the write turn and giving it
back (reserving, the ledger, the device state, the completions and acknowledgements,
the commit; the messages are read and parsed before the turn is taken). Under load the
web process cannot commit during that time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

from . import receiver_load


def measure(events: list, batch_size: int, folder: str) -> dict:
    from core.http import Headers, Request
    from local_receiver import sqlite_store
    from local_receiver.app import LocalApp, LocalWorker

    db = os.path.join(folder, f"turn-{batch_size}.db")
    app = LocalApp(db)
    try:
        for body, token in events:
            answer = app.handle(Request("POST", body, Headers([("x-dt-signature", token)]), "/"))
            assert answer.status == 202, answer
    finally:
        app.stop()
    worker = LocalWorker(db)
    worker.take_ownership(0)
    worker.runner.batch_size = batch_size
    held = {"s": 0.0, "turns": 0, "since": None}
    take, end = sqlite_store.Database._take_turn, sqlite_store.Database._end_turn

    def timed_take(self) -> None:
        had = self._write_locked
        take(self)
        if not had and self._write_locked:
            held["since"] = time.perf_counter()

    def timed_end(self) -> None:
        had = self._write_locked
        end(self)
        if had and not self._write_locked and held["since"] is not None:
            held["s"] += time.perf_counter() - held["since"]
            held["turns"] += 1
            held["since"] = None

    sqlite_store.Database._take_turn, sqlite_store.Database._end_turn = timed_take, timed_end
    stop = threading.Event()
    try:
        cpu = time.process_time()
        worker.runner.run_forever(stop, wait=lambda _: stop.set())  # until the queue is empty
        cpu = time.process_time() - cpu
    finally:
        sqlite_store.Database._take_turn, sqlite_store.Database._end_turn = take, end
        worker.stop()
    n = len(events)
    return {"batch": batch_size, "events": n, "cpu_us": cpu / n * 1e6, "held_us": held["s"] / n * 1e6,
            "turns": held["turns"], "ms_per_turn": held["s"] / max(1, held["turns"]) * 1e3}


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 6000
    sizes = [int(size) for size in (argv[1] if len(argv) > 1 else "25,64").split(",")]
    events = receiver_load.presign(count)
    with tempfile.TemporaryDirectory(prefix="dtbench-turn-") as folder:
        os.environ.update(DT_SIGNATURE_SECRET=receiver_load.SECRET, DT_HANDLERS="bench.append_handler",
                          DT_BENCH_OUT=os.path.join(folder, "handled"))
        for size in sizes:
            r = measure(events, size, folder)
            print(f"batch {r['batch']:3d}: worker CPU {r['cpu_us']:5.0f} µs/event, write lock held {r['held_us']:5.0f}"
                  f" µs/event ({r['turns']} turns, {r['ms_per_turn']:.2f} ms each)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
