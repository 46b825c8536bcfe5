"""The tests' one way to wait for something another process or thread does."""

from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, what: str = "condition", *, proc: subprocess.Popen | None = None
) -> T:
    """Poll `condition` every 50 ms until it returns something truthy, and return that.

    Fails naming `what` once `timeout` seconds have passed, or as soon as `proc` (the
    process expected to make it true) has exited, with the end of its output when the
    test captured it. Wait on a condition, never a fixed sleep: a loaded machine makes
    the sleep too short, an idle one makes it too long."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            out = (out.decode(errors="replace") if isinstance(out, bytes) else out)[-3000:]
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n{out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
