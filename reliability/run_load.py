"""Full-size load runs and RELIABILITY.md.

    python -m reliability [--events 10000] [--cloud-events 2000] [--concurrency 64]
                          [--only local,heroku,aws,azure,gcp,ibm] [--skip-tests] [--out RELIABILITY.md]

- local: `dtconnector serve` in a subprocess on SQLite, over real HTTP.
- heroku: the Procfile's two processes, `python -m heroku.web` (uvicorn) and
  `python -m heroku.worker`, on a real redis-server, over real HTTP.
- aws, azure, gcp, ibm: each in-process stand-in through its test Harness (moto, Azurite,
  the Google emulators, pouchdb-server), threads calling the real entry points.

Each run: 30 % duplicates, shuffled, a few poison events (their handler always fails), DT-
like delivery (retry anything but 2xx), then the worker drains and the end state is
checked: every unique event handled exactly once, the newest state per device and type,
dead letters = the poison events. Then (unless --skip-tests) the fault and hostile-input
suites run per platform and their outcomes go in the same file.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import logging
import json
import os
import platform as host
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from emulator.signing import sign

from . import workload
from .inproc import Probe, deliver_all, percentile, state_snapshot

ROOT = Path(__file__).resolve().parents[1]
SECRET = "reliability-run-secret-0123456789abcdef01"
CLOUDS = ("aws", "azure", "gcp", "ibm")
HOW = {
    "aws": "Lambda entry points in-process on moto (DynamoDB, SQS + DLQ)",
    "azure": "Functions entry points in-process on Azurite (Table Storage, Storage Queue + poison queue)",
    "gcp": "Functions Framework entry points in-process on the Firestore and Pub/Sub emulators",
    "ibm": "Code Engine function + changes-feed worker in-process on pouchdb-server (Cloudant API)",
}
POISON = 5


@dataclass
class Result:
    platform: str
    how: str
    deliveries: int = 0
    unique: int = 0
    concurrency: int = 0
    send_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    retries: int = 0
    statuses: dict = field(default_factory=dict)
    drain_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def rate(self) -> float:
        return self.deliveries / self.send_s if self.send_s else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- DT over HTTP ------------------------------------------------------------------------


def http_send(port: int, bodies: list[bytes], concurrency: int, timeout_s: float = 10.0) -> tuple[list[float], list[int], int]:
    """DT-like delivery over HTTP: every body POSTed until 2xx; returns per-request
    latencies (s), the acknowledging statuses and the number of retries."""
    local = threading.local()
    latencies: list[float] = []
    statuses: list[int] = []
    retries = [0]
    lock = threading.Lock()

    def conn():
        if getattr(local, "c", None) is None:
            local.c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        return local.c

    def one(body: bytes) -> None:
        delay = 0.05
        while True:
            headers = {"X-Dt-Signature": sign(body, SECRET), "Content-Type": "application/json"}
            started = time.perf_counter()
            try:
                c = conn()
                c.request("POST", "/", body, headers)
                response = c.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                local.c = None
                status = None
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
            if status is not None and 200 <= status < 300:
                with lock:
                    statuses.append(status)
                return
            with lock:
                retries[0] += 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies))
    return latencies, statuses, retries[0]


def wait_http(port: int, path: str = "/healthz", timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            data = r.read()
            c.close()
            if r.status == 200:
                return json.loads(data or b"{}")
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on port {port} within {timeout_s} s")
        time.sleep(0.2)


def completions(path: Path) -> Counter:
    if not path.exists():
        return Counter()
    return Counter(line for line in path.read_text().splitlines() if line)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _fill(result: Result, w, concurrency, started, latencies, statuses, retries) -> None:
    result.send_s = time.perf_counter() - started
    result.deliveries, result.unique, result.concurrency = len(w.deliveries), len(w.unique), concurrency
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    result.retries = retries
    result.statuses = dict(Counter(statuses))


def _workload(deliveries: int, seed: int) -> workload.Workload:
    """Exactly `deliveries` requests: unique events (POISON of them poison) + 30 % duplicates."""
    total = round(deliveries / 1.3)
    return workload.make(total - POISON, duplicates=(deliveries - total) / total, devices=50, poison=POISON, seed=seed)


def run_local(events: int, concurrency: int, tmp: Path) -> Result:
    result = Result("local", "`dtconnector serve` (SQLite) over HTTP")
    w = _workload(events, 101)
    port, db, probe_file = free_port(), tmp / "local.db", tmp / "local-probe.log"
    env = {**os.environ, "DT_SIGNATURE_SECRET": SECRET, "DT_HANDLERS": "reliability.probe_handlers",
           "DT_PROBE_FILE": str(probe_file), "DT_MAX_ATTEMPTS": "3", "DT_RETRY_DELAY_S": "0.05",
           "DT_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtconnector", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "local.log", "wb"), start_new_session=True,
    )
    try:
        wait_http(port)
        started = time.perf_counter()
        latencies, statuses, retries = http_send(port, w.deliveries, concurrency)
        _fill(result, w, concurrency, started, latencies, statuses, retries)
        drained = time.perf_counter()
        deadline = time.monotonic() + 600
        while True:
            health = wait_http(port)
            if health.get("queued") == 0 and health.get("deadLetters") == len(w.poison_ids):
                break
            if time.monotonic() > deadline:
                result.problems.append(f"worker did not finish: {health}")
                break
            time.sleep(0.5)
        result.drain_s = time.perf_counter() - drained
    finally:
        stop(proc)
    from core.config import Settings
    from local_receiver.app import LocalApp

    quiet = logging.getLogger("dtconnector")
    level, quiet.level = quiet.level, logging.ERROR  # LocalApp warns about allow_unsigned: read-only here
    app = LocalApp(db, Settings(allow_unsigned=True))
    quiet.setLevel(level)
    try:
        state = {(s.device_id, s.event_type): s.event_id for s in app.state.all()}
        dead = [d["eventId"] for d in app.queue.dead_letters()]
    finally:
        app.db.close()
    result.problems += workload.check(w, completions(probe_file), state, dead)
    return result


def run_heroku(events: int, concurrency: int, tmp: Path) -> Result:
    result = Result("heroku", "the Procfile's web process (heroku.web, uvicorn) + 1 worker process, redis-server, over HTTP")
    from tests.platforms.heroku import SERVER

    try:
        url = SERVER.acquire()
    except BaseException as exc:  # pytest.skip when redis-server is missing
        result.error = f"redis-server unavailable: {exc}"
        return result
    w = _workload(events, 102)
    port, probe_file = free_port(), tmp / "heroku-probe.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "REDIS_"))}
    env.update({"DT_SIGNATURE_SECRET": SECRET, "DT_HANDLERS": "reliability.probe_handlers",
                "DT_PROBE_FILE": str(probe_file), "DT_MAX_ATTEMPTS": "3", "DT_RETRY_DELAY_S": "0.05",
                "DT_LOG_LEVEL": "WARNING", "REDIS_URL": url, "DT_REDIS_PREFIX": f"load-{os.getpid()}:",
                "PYTHONPATH": str(ROOT)})
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "heroku.web", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "heroku-web.log", "wb"), start_new_session=True,
        ))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "heroku.worker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(tmp / "heroku-worker.log", "wb"), start_new_session=True,
        ))
        wait_http(port)
        started = time.perf_counter()
        latencies, statuses, retries = http_send(port, w.deliveries, concurrency)
        _fill(result, w, concurrency, started, latencies, statuses, retries)
        saved = {k: v for k, v in os.environ.items() if k.startswith(("DT_", "REDIS_"))}
        os.environ.update({k: v for k, v in env.items() if k.startswith(("DT_", "REDIS_"))})
        from heroku import runtime

        runtime.reset()
        try:
            queue = runtime.queue()
            drained = time.perf_counter()
            deadline = time.monotonic() + 600
            while not (queue.depth() == 0 and len(queue.dead_letters()) == len(w.poison_ids)):
                if time.monotonic() > deadline:
                    result.problems.append(f"worker did not finish: depth {queue.depth()}")
                    break
                time.sleep(0.5)
            result.drain_s = time.perf_counter() - drained
            for p in procs:
                stop(p)
            store = runtime.state_store()
            state = {(s.device_id, s.event_type): s.event_id for d in w.devices for s in store.get_device(d)}
            dead = [d["eventId"] for d in queue.dead_letters()]
            result.problems += workload.check(w, completions(probe_file), state, dead)
        finally:
            runtime.reset()
            for k in [k for k in os.environ if k.startswith(("DT_", "REDIS_"))]:
                del os.environ[k]
            os.environ.update(saved)
    finally:
        for p in procs:
            stop(p)
        SERVER.release()
    return result


def run_cloud(name: str, events: int, concurrency: int) -> Result:
    import importlib

    from core.handlers import registry

    module = importlib.import_module(f"tests.platforms.{name}")
    stand_in = module.STAND_IN
    result = Result(name, HOW.get(name, "in-process stand-in through its Harness"))
    try:
        stand_in.start()
    except BaseException as exc:  # pytest.skip(reason)
        result.error = f"stand-in could not start: {exc}"
        return result
    harness = None
    try:
        from tests.dt import BASE_ENV

        registry.clear()
        probe = Probe().install()
        harness = stand_in.harness({**BASE_ENV, "DT_SIGNATURE_SECRET": SECRET, "DT_LOG_LEVEL": "WARNING"})
        w = _workload(events, 103)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the entry points' JSON log lines
            sent = deliver_all(harness, w.deliveries, SECRET, concurrency=concurrency, timeout_s=300)
        _fill(result, w, concurrency, started, [t for d in sent for t in d.latencies], [d.status for d in sent],
              sum(len(d.attempts) - 1 for d in sent))
        drained = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            harness.drain()
        result.drain_s = time.perf_counter() - drained
        result.problems += workload.check(w, probe.completed, state_snapshot(harness, w.devices), harness.dead_letters())
    except Exception as exc:  # report and go on with the other platforms
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        if harness is not None:
            harness.close()
        registry.clear()
        stand_in.stop()
    return result


# --- the fault and hostile suites --------------------------------------------------------


def run_suites(tmp: Path, only: list[str]) -> tuple[dict, str, float]:
    xml = tmp / "suites.xml"
    env = {**os.environ, "DT_TEST_PLATFORMS": ",".join(only)}
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - started
    table: dict[str, dict[str, str]] = defaultdict(dict)
    if not xml.exists():
        return table, " ".join(cmd[2:]), took
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "")
        test, _, params = name.partition("[")
        platform_name = params.rstrip("]").split("-")[0] if params else "-"
        variant = "-".join(params.rstrip("]").split("-")[1:])
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{test}" + (f" [{variant}]" if variant else "")
        outcome = "pass"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "FAIL"
            elif child.tag == "skipped":
                outcome = "xfail" if child.get("type") == "pytest.xfail" else "skip"
        table[key][platform_name] = outcome
    return table, "DT_TEST_PLATFORMS=... " + " ".join(["python", "-m", "pytest", "tests/reliability", "-q"]), took


# --- report ------------------------------------------------------------------------------


def machine() -> str:
    load = os.getloadavg()
    return (f"{host.node()}: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            f"(1/5/15 min) when the report was written; Python {host.python_version()}")


def render(results: list[Result], suites: dict, suite_cmd: str, suite_s: float, args, started: str) -> str:
    lines = [
        "# Reliability figures",
        "",
        f"Produced by `python -m reliability` on {started}. {machine()}.",
        "",
        f"**These figures come from a small machine** ({os.cpu_count()} CPUs, shared by the sender, the"
        " receiver and its stand-ins): treat throughput and latency as lower bounds, not as capacity"
        " figures. The stand-ins (moto, Azurite, the Google emulators, pouchdb-server) are far slower"
        " than the real services.",
        "",
        "## Load: DT-like delivery, then the end-state checks",
        "",
        "Each run: the deliveries are the unique events plus 30 % duplicates, shuffled, sent",
        "concurrently; every request is retried until 2xx, as DT does (each attempt signed",
        f"afresh). {POISON} events per run are poison (their handler always fails). After the",
        "worker drained the queue: every unique healthy event's handler completed exactly once,",
        "each (device, event type) holds the newest event, and the dead letters are exactly the",
        "poison events.",
        "",
        "| platform | how | deliveries (unique) | concurrency | events/s | p50 ack | p99 ack | retries | 202 / 200 | drain | end state |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.platform} | {r.how} | - | - | - | - | - | - | - | - | not run: {r.error} |")
            continue
        state = "OK" if not r.problems else f"**{len(r.problems)} problems**: " + "; ".join(r.problems[:3]).replace("|", "/")
        lines.append(
            f"| {r.platform} | {r.how} | {r.deliveries} ({r.unique}) | {r.concurrency} | {r.rate:.0f} | "
            f"{r.p50_ms:.0f} ms | {r.p99_ms:.0f} ms | {r.retries} | {r.statuses.get(202, 0)} / {r.statuses.get(200, 0)} | "
            f"{r.drain_s:.1f} s | {state} |"
        )
    lines += [
        "",
        "events/s = deliveries acknowledged per second of sending (ingest only; the worker runs",
        "concurrently for local and heroku, afterwards for the in-process stand-ins: `drain`).",
        "p50/p99 ack = latency of each HTTP request (or entry-point call), retries included.",
        "",
        "Reproduce:",
        "",
        "```",
        f"python -m reliability --events {args.events} --cloud-events {args.cloud_events} --concurrency {args.concurrency}"
        + (f" --only {','.join(args.only)}" if args.only != list(("local", "heroku", *CLOUDS)) else ""),
        "```",
        "",
        "A scaled-down version (600 deliveries, concurrency 16, every platform) runs in `make test`:",
        "`python -m pytest tests/reliability/test_load.py`.",
    ]
    if suites:
        names = sorted({p for row in suites.values() for p in row})
        lines += [
            "",
            "## Faults and hostile input, per platform",
            "",
            f"`{suite_cmd}` ({suite_s:.0f} s). pass = the guarantee held; xfail = a known bug, reported",
            "and pinned by a strict expected failure (the test fails once it is fixed, so the",
            "marker gets removed); skip = not applicable, with the reason in the test.",
            "",
            "| scenario | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for scenario in sorted(suites):
            row = suites[scenario]
            lines.append(f"| {scenario} | " + " | ".join(row.get(n, "") for n in names) + " |")
        lines += ["", f"Fuzz examples per property: `DT_FUZZ_EXAMPLES` ({os.environ.get('DT_FUZZ_EXAMPLES', '25')} here;"
                  " `make fuzz` runs 10,000)."]
    return "\n".join(lines) + "\n"


def _long_rows(args) -> list:
    from . import long_run

    rows = []
    for name in args.only:
        print(f"[reliability] {name}: long run ...", file=sys.stderr, flush=True)
        rate = args.long_run_rate if name in ("local", "heroku") else args.long_run_cloud_rate
        row = long_run.run(name, args.long_run_windows, rate, args.long_run_ttl, SECRET)
        rows.append(row)
        print(f"[reliability] {name}: {row.events} events at {row.rate:.0f}/s over {row.windows} windows, "
              f"peak {row.peak_events} event records ({row.peak_windows:.2f} windows) {row.error}",
              file=sys.stderr, flush=True)
    return rows


def _long_run_only(args) -> int:
    """Re-measure the long run alone and put its section in place of the old one."""
    from . import long_run

    rows = _long_rows(args)
    out = Path(args.out)
    text = out.read_text() if out.exists() else ""
    marker = "\n## Long run"
    kept = text[: text.index(marker)] if marker in text else text
    section = "\n".join(long_run.render(rows, args.long_run_windows, args.long_run_ttl))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out.write_text(kept.rstrip("\n") + "\n" + section + f"\n\n(Long run measured {when}, `python -m reliability --long-run-only`.)\n")
    print(f"[reliability] wrote {out}", file=sys.stderr)
    return 0 if all(not r.error for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="deliveries for local and heroku")
    parser.add_argument("--cloud-events", type=int, default=2_000, help="deliveries per in-process cloud stand-in")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--only", type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
                        default=["local", "heroku", *CLOUDS])
    parser.add_argument("--skip-tests", action="store_true", help="do not run tests/reliability per platform")
    parser.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    parser.add_argument("--long-run-windows", type=int, default=10, help="dedup windows in the long run (0: skip it)")
    parser.add_argument("--long-run-rate", type=float, default=1000.0, help="events/s in the long run (local, heroku)")
    parser.add_argument("--long-run-cloud-rate", type=float, default=100.0, help="events/s in the long run (cloud stand-ins)")
    parser.add_argument("--long-run-ttl", type=float, default=2.0, help="the long run's DT_DEDUP_TTL_S (seconds)")
    parser.add_argument("--long-run-only", action="store_true",
                        help="run only the long run and replace its section of --out, keeping the rest")
    args = parser.parse_args(argv)
    if args.long_run_only:
        return _long_run_only(args)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dtconnector-reliability-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.only:
            print(f"[reliability] {name} ...", file=sys.stderr, flush=True)
            if name == "local":
                r = run_local(args.events, args.concurrency, tmp)
            elif name == "heroku":
                r = run_heroku(args.events, args.concurrency, tmp)
            else:
                r = run_cloud(name, args.cloud_events, args.concurrency)
            results.append(r)
            print(f"[reliability] {name}: {r.deliveries} deliveries, {r.rate:.0f}/s, p99 {r.p99_ms:.0f} ms, "
                  f"drain {r.drain_s:.1f} s, end state {'OK' if not r.problems and not r.error else r.problems[:3] or r.error}",
                  file=sys.stderr, flush=True)
        suites, suite_cmd, suite_s = ({}, "", 0.0)
        if not args.skip_tests:
            print("[reliability] fault and hostile-input suites ...", file=sys.stderr, flush=True)
            suites, suite_cmd, suite_s = run_suites(tmp, args.only)
    long_rows = _long_rows(args) if args.long_run_windows > 0 else []
    text = render(results, suites, suite_cmd, suite_s, args, started)
    if long_rows:
        from . import long_run

        text += "\n".join(long_run.render(long_rows, args.long_run_windows, args.long_run_ttl)) + "\n"
    Path(args.out).write_text(text)
    print(f"[reliability] wrote {args.out}", file=sys.stderr)
    return 0 if all(not r.problems and not r.error for r in results) else 1
