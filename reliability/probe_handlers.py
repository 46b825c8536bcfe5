"""The load runs' user handler for receivers in other processes (`DT_HANDLERS=
reliability.probe_handlers`): appends each completed event id to `DT_PROBE_FILE` (one
short O_APPEND write per line, so several processes can share the file) and always fails
on poison devices."""

import os

from core import on
from reliability.workload import POISON_PREFIX

_PATH = os.environ.get("DT_PROBE_FILE", "probe.log")


@on("*")
def probe(event):
    if event.device_id.startswith(POISON_PREFIX):
        raise RuntimeError("this handler always fails on poison devices")
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (event.event_id + "\n").encode())
    finally:
        os.close(fd)
