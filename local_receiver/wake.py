"""Waking the worker process when the web process has queued something.

The two processes share only the SQLite file, which has no change notification. So the
worker owns a named pipe next to it (``<db>.wake``): the web process writes one byte
after a commit that queued events, and an idle worker sleeps in ``select`` on the pipe
instead of polling the database. Nothing depends on a byte arriving: the worker also
looks at the queue at least every `MAX_IDLE_WAIT_S`, so a lost wake-up (a full pipe, no
worker running yet) only delays, and a byte with nothing queued only costs one query.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time

MAX_IDLE_WAIT_S = 1.0
#: After the pipe had no reader, how long the web process waits before trying again.
_REOPEN_AFTER_S = 0.5


def wake_path(db_path: str) -> str:
    return db_path + ".wake"


class WakeReader:
    """The worker's end: created if absent, opened read-write so it never reads EOF
    (which would make ``select`` return at once forever) while no writer is open."""

    def __init__(self, db_path: str):
        self.path = wake_path(db_path)
        try:
            os.mkfifo(self.path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(os.stat(self.path).st_mode):
                os.unlink(self.path)
                os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def wait(self, timeout_s: float) -> bool:
        """Sleep until woken or `timeout_s` passes; True when woken. Consumes every
        pending byte, since one look at the queue answers them all."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, min(timeout_s, MAX_IDLE_WAIT_S)))
        if not ready:
            return False
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        os.close(self.fd)


class WakeWriter:
    """The web process's end: `__call__` writes one byte, never blocks, never raises.
    Opened lazily (the worker may start after us, or be restarted)."""

    def __init__(self, db_path: str, clock=time.monotonic):
        self.path = wake_path(db_path)
        self._fd: int | None = None
        self._retry_at = 0.0
        self._clock = clock

    def __call__(self) -> None:
        if self._fd is None:
            now = self._clock()
            if now < self._retry_at:
                return
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no pipe or no reader yet (ENOENT, ENXIO): it polls anyway
                self._retry_at = now + _REOPEN_AFTER_S
                return
        try:
            os.write(self._fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of unread wake-ups: the worker is awake already
        except OSError as exc:  # EPIPE: the reader went away; reopen next time
            if exc.errno != errno.EAGAIN:
                self.close()

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
