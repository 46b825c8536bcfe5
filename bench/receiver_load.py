"""(2) `dtconnector serve` under load vs the anchor a DT user would otherwise deploy.

The anchor is DT's documented Flask receiver (`bench/anchor_flask.py`: PyJWT verify,
SHA-256 body checksum, 200; no dedup, no queue) under gunicorn with two sync workers.
Ours verifies, deduplicates and enqueues durably in SQLite, and runs the handlers in the
same process. Both are driven by wrk (`bench/wrk_load.py`) at concurrency 32 with unique
events signed before the load, interleaved round by round, each server in its own
process group, a fresh database per run.

Then one sustained run of ours: acknowledgements/s, handlers/s during the load (acks
minus the backlog left at the end, over the duration), the backlog, and how long the
worker takes to drain it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import wrk_load

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef0123456789"
BIN = Path(sys.executable).parent
CONCURRENCY = 32


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_")}
    env.update(DT_SIGNATURE_SECRET=SECRET, PYTHONPATH=str(ROOT), **extra)
    return env


class Server:
    """A server process (group) that prints its URL on stderr."""

    def __init__(self, argv: list[str], pattern: str, cwd: str, suffix: str = ""):
        # stderr goes to a file, read for the URL: a pipe nobody reads would fill and block
        # the server, and a closed one would break its next log line.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, env=_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + 30
        self.url = None
        while time.monotonic() < deadline and self.url is None and self.proc.poll() is None:
            time.sleep(0.05)
            self.log.seek(0)
            m = re.search(pattern, self.log.read())
            if m:
                self.url = m.group(1) + suffix
        if self.url is None:
            self.stop()
            raise RuntimeError(f"server did not start: {' '.join(argv)}")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "healthz", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def anchor(tmp: str) -> Server:
    argv = [str(BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", "127.0.0.1:0", "bench.anchor_flask:app"]
    return Server(argv, r"Listening at: (http://\S+)", str(ROOT), suffix="/")


def ours(tmp: str, run: int) -> Server:
    argv = [sys.executable, "-m", "local_receiver.cli", "serve", "--port", "0", "--db", os.path.join(tmp, f"r{run}.db")]
    return Server(argv, r"(http://127\.0\.0\.1:\d+/)", tmp)


def _presign_part(args: tuple[int, int]) -> list[tuple[bytes, str]]:
    count, seed = args
    return wrk_load.presign(count, SECRET, seed)


def presign(count: int, seed_base: int = 0) -> list[tuple[bytes, str]]:
    """`count` unique signed events, signed on every CPU before any load starts."""
    parts = max(1, os.cpu_count() or 1)
    with ProcessPoolExecutor(parts) as pool:
        seeds = range(seed_base + 1, seed_base + parts + 1)
        chunks = pool.map(_presign_part, [(count // parts + 1, seed) for seed in seeds])
    events = [e for chunk in chunks for e in chunk]
    return events[:count]


def _wait_drained(server: Server, limit_s: float = 120) -> float:
    t0 = time.monotonic()
    while server.health().get("queued", 0) > 0 and time.monotonic() - t0 < limit_s:
        time.sleep(0.02)
    return round(time.monotonic() - t0, 2)


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a process group
    (gunicorn's master and workers; our one process). 0 where /proc is absent."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat, the process group
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _measure(server: Server, events, seconds: float) -> dict:
    wrk_load.run(server.url, events[-300:], 1)  # warm-up: connections, caches, WAL
    cpu_before = _group_cpu_s(server.proc.pid)
    result = wrk_load.run(server.url, events[:-300], seconds, connections=CONCURRENCY)
    cpu = _group_cpu_s(server.proc.pid) - cpu_before
    acks = sum(v for k, v in result["statuses"].items() if k in ("200", "202"))
    return {"acks_per_s": acks / result["seconds"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "non_2xx": result["requests"] - acks, "errors": result["errors"], "seconds": result["seconds"],
            "acks": acks, "cpu_us_per_ack": cpu / acks * 1e6 if acks else 0.0}


def run(quick: bool = False, count: int | None = None, rounds: int | None = None) -> dict:
    if not wrk_load.available():
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    seconds = 3 if quick else 8
    sustained_s = 10 if quick else 30
    rounds = rounds or (1 if quick else 3)
    events = presign(count or (6000 if quick else 40000))
    results: dict[str, list[dict]] = {"anchor": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="dtbench-") as tmp:
        run_no = 0
        for _ in range(rounds):  # alternate, so machine noise hits both alike
            for kind in ("anchor", "ours"):
                run_no += 1
                server = anchor(tmp) if kind == "anchor" else ours(tmp, run_no)
                try:
                    results[kind].append(_measure(server, events, seconds))
                finally:
                    server.stop()
        med = {k: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for k, rs in results.items()}
        # Sustained: enough events for 30 s at 1.5x the rate just measured.
        need = int(med["ours"]["acks_per_s"] * sustained_s * 1.5) + 300
        if need > len(events):
            events = events + presign(need - len(events), seed_base=100)
        run_no += 1
        server = ours(tmp, run_no)
        try:
            wrk_load.run(server.url, events[-300:], 1)
            _wait_drained(server)
            load = wrk_load.run(server.url, events[:-300], sustained_s, connections=CONCURRENCY)
            backlog = server.health()["queued"]
            drain_s = _wait_drained(server)
        finally:
            server.stop()
    acks = sum(v for k, v in load["statuses"].items() if k in ("200", "202"))
    handled = acks - backlog
    sustained = {
        "seconds": round(load["seconds"], 1),
        "acks_per_s": acks / load["seconds"],
        "handled_per_s": handled / load["seconds"],
        "handler_ratio": round(handled / acks, 3) if acks else None,
        "backlog_at_end": backlog,
        "drain_s": drain_s,
        "p99_ms": load["p99_ms"],
        "non_2xx": load["requests"] - acks,
    }
    ratio = med["ours"]["acks_per_s"] / med["anchor"]["acks_per_s"]
    targets = {
        "acks_vs_anchor": ratio >= 1.5,
        "p99": med["ours"]["p99_ms"] <= 15.0,
        "handlers_keep_pace": (sustained["handler_ratio"] or 0) >= 0.9,
        "drain": drain_s <= 2.0,
    }
    return {
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "rounds": rounds,
        "median": med,
        "all": results,
        "ratio": round(ratio, 2),
        "sustained": sustained,
        "targets": targets,
        "target_met": all(targets.values()),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
