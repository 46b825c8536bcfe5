"""The long-run row of `python -m reliability`: records stored after N dedup windows.

Each platform, through its test Harness (the same stand-ins as the load runs), gets a
short dedup window (`--long-run-ttl` seconds); every window it receives
`--long-run-events` new events spread over a few devices, drains the worker and runs the
platform's own cleanup (`Harness.sweep`, which is what the receiver thread, the timer
trigger or the worker job runs). After the last window the stored records are counted:
bounded storage means about one window's events (two records each: dedup + ledger)
plus one state record per (device, event type), whatever N is. moto and the Firestore
emulator never apply a TTL, so for aws and gcp the count grows; their row says so.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from dataclasses import dataclass

DEVICES = 5


@dataclass
class LongRun:
    platform: str
    windows: int = 0
    events: int = 0
    ttl_s: float = 0.0
    stored_events: int = 0
    stored_state: int = 0
    peak_events: int = 0
    ttl_never_fires: bool = False
    error: str = ""


def _run(harness, result: LongRun, windows: int, per_window: int, secret: str) -> None:
    from tests.dt import event_body, signed

    for window in range(windows):
        for i in range(per_window):
            body = event_body(
                device=f"long-{i % DEVICES}",
                event_id=uuid.uuid4().hex[:20],
                timestamp=f"2026-11-22T{10 + window:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000000Z",
            )
            status = harness.deliver(body, signed(body, secret)).status
            if status != 202:
                raise RuntimeError(f"delivery answered {status}")
            result.events += 1
        harness.drain()
        window_end = time.time() + result.ttl_s + 0.3
        harness.sweep()
        stored = harness.stored_records()
        result.peak_events = max(result.peak_events, stored["events"])
        time.sleep(max(0.0, window_end - time.time()))
        result.windows += 1
    harness.sweep()
    stored = harness.stored_records()
    result.stored_events, result.stored_state = stored["events"], stored["state"]


def run(name: str, windows: int, per_window: int, ttl_s: float, secret: str) -> LongRun:
    import importlib

    from core.handlers import registry
    from tests.platforms.base import harness_factory, running

    result = LongRun(name, ttl_s=ttl_s)
    stand_in = importlib.import_module(f"tests.platforms.{name}").STAND_IN
    registry.clear()
    try:
        with running(stand_in), harness_factory(stand_in.harness) as make:
            with contextlib.redirect_stdout(io.StringIO()):  # the entry points' JSON log lines
                harness = make(DT_SIGNATURE_SECRET=secret, DT_LOG_LEVEL="WARNING", DT_DEDUP_TTL_S=str(ttl_s))
                result.ttl_never_fires = harness.ttl_never_fires
                _run(harness, result, windows, per_window, secret)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a failure, or pytest.skip's exception: the stand-in cannot run here
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        registry.clear()
    return result


def render(rows: list[LongRun], windows: int, per_window: int, ttl_s: float) -> list[str]:
    lines = [
        "",
        "## Long run: records stored after N dedup windows",
        "",
        f"{windows} windows of {ttl_s:g} s (`DT_DEDUP_TTL_S`), {per_window} new events per window over",
        f"{DEVICES} devices; after each window the worker drained and the platform's cleanup ran.",
        "Bounded storage: the count after the last window stays near one window's events (two",
        "records each: dedup + ledger) plus the state records, however many windows ran.",
        "",
        "| platform | windows | events delivered | event records after the run | peak during the run | state records | cleanup |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.platform} | - | - | - | - | - | not run: {r.error} |")
            continue
        how = (
            "native TTL, never applied by this stand-in: every record carries its expiry (tests/contract/test_retention.py)"
            if r.ttl_never_fires
            else "removed"
        )
        lines.append(
            f"| {r.platform} | {r.windows} | {r.events} | {r.stored_events} | {r.peak_events} | {r.stored_state} | {how} |"
        )
    return lines
