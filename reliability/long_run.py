"""The long-run rows of `python -m reliability`: store size per dedup window under a
sustained high event rate, with the platform's cleanup running alongside, as deployed.

Each platform, through its test Harness (the same stand-ins as the load runs), gets a
short dedup window (`--long-run-ttl` seconds) and receives new events at a steady target
rate (`--long-run-rate`, `--long-run-cloud-rate` for the in-process cloud stand-ins) for
`--long-run-windows` windows: one thread delivers on a fixed schedule, one runs the worker
(`Harness.drain`) continuously, the platform's cleanup runs alongside: the local receiver's
own background thread with its production schedule (`Harness.start_cleanup`), elsewhere
the round the timer trigger or the worker job runs (`Harness.sweep`) every second (their
deployed schedules are the cloud's), and the store is sampled every quarter second. Bounded storage means the stored event records
stay within about two windows' worth (two records per event: dedup + ledger), whatever
the rate and however many windows run. moto and the Firestore emulator never apply a TTL,
so for aws and gcp the count grows; their row says so. Redis expires keys itself.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
from dataclasses import dataclass, field

DEVICES = 5
#: Records one handled event leaves while its window lasts: the ingest dedup record (with
#: its outbox entry, on Cloudant) and the worker's ledger entry.
RECORDS_PER_EVENT = 2
SAMPLE_EVERY_S = 0.25
SWEEP_EVERY_S = 1.0
CLEANUP = {
    "local": "its background sweeper thread, production schedule",
    "heroku": "Redis key expiry",
    "azure": "sweep timer function",
    "ibm": "worker job's sweep",
    "aws": "DynamoDB TTL, never applied by moto",
    "gcp": "Firestore TTL policy, never applied by the emulator",
}


@dataclass
class LongRun:
    platform: str
    target_rate: float = 0.0
    ttl_s: float = 0.0
    windows: int = 0
    events: int = 0
    elapsed_s: float = 0.0
    #: The most event records stored at any sample within each window.
    per_window: list[int] = field(default_factory=list)
    #: The most events queued (the worker's backlog, part of the stored records) at any sample.
    peak_queued: int | None = None
    peak_events: int = 0
    stored_events: int = 0
    stored_state: int = 0
    ttl_never_fires: bool = False
    error: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def window_records(self) -> float:
        """The records one window of events leaves at the achieved rate."""
        return self.rate * self.ttl_s * RECORDS_PER_EVENT

    @property
    def peak_windows(self) -> float:
        return self.peak_events / self.window_records if self.window_records else 0.0


#: Where reading the queue's depth would disturb the run: the GCP harness pulls messages to
#: count them, into the buffer its drain thread delivers from.
NO_QUEUE_SAMPLES = ("gcp",)


def _run(harness, result: LongRun, secret: str) -> None:
    from tests.dt import event_body, signed

    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(loop):
        def run():
            try:
                loop()
            except BaseException as exc:  # noqa: BLE001 - reported in the row
                errors.append(exc)
                stop.set()

        return threading.Thread(target=run, daemon=True)

    duration_s = result.windows * result.ttl_s
    started = time.monotonic()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            due = started + i / result.target_rate
            now = time.monotonic()
            if now - started >= duration_s or due - started >= duration_s:
                return  # a stand-in slower than the target rate gets the same duration
            if due > now:
                time.sleep(due - now)
            body = event_body(
                device=f"long-{i % DEVICES}",
                event_id=uuid.uuid4().hex[:20],
                timestamp=f"2026-11-22T10:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}000Z",
            )
            status = harness.deliver(body, signed(body, secret)).status
            if status != 202:
                raise RuntimeError(f"delivery answered {status}")
            result.events += 1
            i += 1

    def work() -> None:
        while not stop.is_set():
            harness.drain()
            stop.wait(0.02)

    def clean() -> None:
        while not stop.wait(SWEEP_EVERY_S):
            harness.sweep()

    stop_own_cleanup = harness.start_cleanup()  # the local receiver's thread, as deployed
    feeder, worker, cleaner = guarded(feed), guarded(work), guarded(clean)
    threads = (feeder, worker) if stop_own_cleanup else (feeder, worker, cleaner)
    for thread in threads:
        thread.start()
    window_peak, window_end = 0, started + result.ttl_s
    while feeder.is_alive() and not stop.is_set():
        feeder.join(SAMPLE_EVERY_S)
        window_peak = max(window_peak, harness.stored_records()["events"])
        if result.platform not in NO_QUEUE_SAMPLES:
            result.peak_queued = max(result.peak_queued or 0, harness.queue_depth())
        if time.monotonic() >= window_end:
            result.per_window.append(window_peak)
            window_peak, window_end = 0, window_end + result.ttl_s
    result.elapsed_s = time.monotonic() - started
    if window_peak:
        result.per_window.append(window_peak)
    stop.set()
    for thread in threads:
        thread.join(60)
    if stop_own_cleanup:
        stop_own_cleanup()
    if errors:
        raise errors[0]
    harness.drain()
    harness.sweep()
    result.peak_events = max(result.per_window, default=0)
    stored = harness.stored_records()
    result.stored_events, result.stored_state = stored["events"], stored["state"]


def run(name: str, windows: int, rate: float, ttl_s: float, secret: str) -> LongRun:
    import importlib

    from core.handlers import registry
    from tests.platforms.base import harness_factory, running

    result = LongRun(name, target_rate=rate, ttl_s=ttl_s, windows=windows)
    stand_in = importlib.import_module(f"tests.platforms.{name}").STAND_IN
    registry.clear()
    try:
        with running(stand_in), harness_factory(stand_in.harness) as make:
            with contextlib.redirect_stdout(io.StringIO()):  # the entry points' JSON log lines
                harness = make(DT_SIGNATURE_SECRET=secret, DT_LOG_LEVEL="WARNING", DT_DEDUP_TTL_S=str(ttl_s))
                result.ttl_never_fires = harness.ttl_never_fires and name != "heroku"
                _run(harness, result, secret)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a failure, or pytest.skip's exception: the stand-in cannot run here
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        registry.clear()
    return result


def render(rows: list[LongRun], windows: int, ttl_s: float) -> list[str]:
    lines = [
        "",
        "## Long run: store size per dedup window at a sustained rate",
        "",
        f"{windows} windows of {ttl_s:g} s (`DT_DEDUP_TTL_S`), new events over {DEVICES} devices delivered on a",
        "fixed schedule at the target rate while the worker drains and the platform's cleanup runs",
        f"alongside (local: its own background thread as deployed; elsewhere the cloud-scheduled round every {SWEEP_EVERY_S:g} s); the store is sampled every {SAMPLE_EVERY_S:g} s. One window of",
        f"records is achieved rate x window x {RECORDS_PER_EVENT} (dedup + ledger). Bounded storage: the peak stays",
        "within about two windows, whatever the rate and the number of windows, unless the worker falls",
        "behind (queued events are stored until handled: the backlog column). The rate a stand-in",
        "reaches in-process on this machine is its own (moto, Azurite and the emulators answer in",
        "milliseconds), not the cloud's.",
        "",
        "| platform | target /s | achieved /s | events | one window (records) | peak stored per window | peak in windows | peak queued (worker backlog) | after the run | state | cleanup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.platform} | {r.target_rate:g} | - | - | - | - | - | - | - | - | not run: {r.error} |")
            continue
        peaks = ", ".join(str(n) for n in r.per_window)
        lines.append(
            f"| {r.platform} | {r.target_rate:g} | {r.rate:.0f} | {r.events} | {r.window_records:.0f} | {peaks} |"
            f" {r.peak_windows:.2f} | {'-' if r.peak_queued is None else r.peak_queued} | {r.stored_events} | {r.stored_state} |"
            f" {CLEANUP.get(r.platform, 'sweep')} |"
        )
    return lines
