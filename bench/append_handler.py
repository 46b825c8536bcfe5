"""The benchmarks' handler: append one line per event to the file ``DT_BENCH_OUT`` (opened
and closed each time, the simplest durable thing a user's handler does)."""

from __future__ import annotations

import os

from core import on


@on("*")
def append_line(event) -> None:
    with open(os.environ["DT_BENCH_OUT"], "a") as out:
        out.write(event.event_id + "\n")
