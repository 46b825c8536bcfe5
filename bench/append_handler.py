"""The benchmark's handler: append one line (the event id) to a file, as the simplest real
handler would. ``DT_HANDLERS=bench.append_handler``; the file is ``BENCH_HANDLED_FILE``."""

import os

from core import on

_out = open(os.environ.get("BENCH_HANDLED_FILE", os.devnull), "a", buffering=1)


@on("*")
def append_line(event):
    _out.write(event.event_id + "\n")
