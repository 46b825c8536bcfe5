"""(2) `dtconnector serve` under load, side by side with the anchor and the machine's ceiling.

Servers, interleaved round by round, each in its own process group, a fresh database per run:

- *uvicorn raw*: an ASGI app that reads the body and answers 202 (`bench/raw_asgi.py`):
  what one Python process can answer on this machine, nothing verified or stored;
- *floor*: our web process with nothing after the checks (`bench/verify_only.py`: the same
  serving, ASGI app and `Receiver.admit`, then 202; nothing stored, no worker): more than any
  receiver that also stores each event and runs its handler can answer here;
- *anchor*: DT's documented Flask receiver (`bench/anchor_flask.py`: PyJWT verify, SHA-256
  body checksum, 200; no dedup, no queue) under gunicorn with two sync workers;
- *ours*: `dtconnector serve` (web process + worker process), verifying, deduplicating,
  enqueuing durably in SQLite (``synchronous=NORMAL``) and running a handler that appends
  one line to a file (`bench/append_handler.py`); and the same with
  ``DT_SQLITE_SYNCHRONOUS=FULL`` (an fsync per commit).

All driven by wrk (`bench/wrk_load.py`) at concurrency 32 with unique events signed before
the load. Then one sustained run of ours: acknowledgements/s, handlers/s during the load
(acks minus the backlog left at the end, over the duration), how long the worker takes
to drain the backlog, and the web process's memory (RSS) at the start and the end.
Where `py-spy` is installed, a profile of the web and worker processes under the same
load says where the time goes.
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
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import wrk_load

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef0123456789"
BIN = Path(sys.executable).parent
CONCURRENCY = 32
KINDS = ("raw", "floor", "anchor", "ours", "ours_full")
PROFILE_HZ = 250
PROFILE_S = 5
LABELS = {
    "raw": "uvicorn raw 202 (reads the body, 1 process)",
    "floor": "our web process, verify + parse + 202, nothing stored (1 process)",
    "anchor": "anchor: DT's Flask receiver (gunicorn, 2 sync)",
    "ours": "dtconnector serve (web + worker, NORMAL)",
    "ours_full": "dtconnector serve, DT_SQLITE_SYNCHRONOUS=FULL",
}


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_")}
    env.update(DT_SIGNATURE_SECRET=SECRET, PYTHONPATH=str(ROOT), **extra)
    return env


class Server:
    """A server process (group) that prints its URL on stderr."""

    def __init__(self, argv: list[str], pattern: str, cwd: str, suffix: str = "", env: dict | None = None):
        # stderr goes to a file, read for the URL: a pipe nobody reads would fill and block
        # the server, and a closed one would break its next log line.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, env=env or _env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + 60
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

    def children(self) -> dict[str, int]:
        """`dtconnector serve`'s web and worker pids."""
        pid = self.proc.pid
        roles = {}
        for kid in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
            if b"local_receiver.serve" in argv:
                roles[argv[argv.index(b"local_receiver.serve") + 1].decode()] = int(kid)
        return roles

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def raw(tmp: str) -> Server:
    return Server([sys.executable, "-m", "bench.raw_asgi"], r"(http://127\.0\.0\.1:\d+/)", str(ROOT))


def floor(tmp: str) -> Server:
    return Server([sys.executable, "-m", "bench.verify_only"], r"(http://127\.0\.0\.1:\d+/)", str(ROOT))


def anchor(tmp: str) -> Server:
    argv = [str(BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", "127.0.0.1:0", "bench.anchor_flask:app"]
    return Server(argv, r"Listening at: (http://\S+)", str(ROOT), suffix="/")


def ours(tmp: str, run: int, synchronous: str = "NORMAL") -> Server:
    db = os.path.join(tmp, f"r{run}.db")
    argv = [sys.executable, "-m", "dtconnector", "serve", "--port", "0", "--db", db]
    env = _env(DT_HANDLERS="bench.append_handler", DT_BENCH_OUT=os.path.join(tmp, f"r{run}.handled"),
               DT_SQLITE_SYNCHRONOUS=synchronous)
    return Server(argv, r"(http://127\.0\.0\.1:\d+/)", tmp, env=env)


def start(kind: str, tmp: str, run: int) -> Server:
    if kind == "raw":
        return raw(tmp)
    if kind == "floor":
        return floor(tmp)
    if kind == "anchor":
        return anchor(tmp)
    return ours(tmp, run, "FULL" if kind == "ours_full" else "NORMAL")


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
    (gunicorn's master and workers; our supervisor, web and worker). 0 where /proc is absent."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat, the process group
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measure(server: Server, events, seconds: float) -> dict:
    wrk_load.run(server.url, events[-300:], 1)  # warm-up: connections, caches, WAL
    cpu_before = _group_cpu_s(server.proc.pid)
    result = wrk_load.run(server.url, events[:-300], seconds, connections=CONCURRENCY)
    cpu = _group_cpu_s(server.proc.pid) - cpu_before
    acks = sum(v for k, v in result["statuses"].items() if k in ("200", "202"))
    return {"acks_per_s": acks / result["seconds"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "non_2xx": result["requests"] - acks, "status_503": result["statuses"].get("503", 0),
            "errors": result["errors"], "seconds": result["seconds"],
            "acks": acks, "cpu_us_per_ack": cpu / acks * 1e6 if acks else 0.0}


def _profile(server: Server, events, seconds: float, tmp: str) -> dict | None:
    """py-spy samples of the web and worker processes under load, taken only from the
    thread holding the GIL (``--gil``: Python's CPU time, not threads waiting): the
    functions where each spends its time (own samples) and the largest inclusive parts."""
    spy = BIN / "py-spy"
    if not spy.exists():
        return None
    procs = {}
    for role, pid in server.children().items():
        out = os.path.join(tmp, f"profile-{role}.txt")
        procs[role] = (out, subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(PROFILE_HZ),
                                              "-f", "raw", "-o", out, "--nonblocking", "--gil"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wrk_load.run(server.url, events, seconds + 1, connections=CONCURRENCY)
    report = {}
    for role, (out, proc) in procs.items():
        proc.wait(60)
        report[role] = _summarise(out)
    return report


def _summarise(path: str, top: int = 12) -> dict:
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {"samples": 0, "own": [], "inclusive": []}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(.*/(site-packages/)?", " (", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    skip = ("<module>", "_run_", "main ", "run (", "Thread.", "Runner.run", "serve (", "_run_uvloop", "web_main",
            "worker_main", "LocalWorker.run", "QueueRunner.run_forever", "GroupCommit._run ")
    pick = [(f, n) for f, n in inclusive.most_common(80) if not f.startswith(skip)]
    return {"samples": total,
            "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
            "inclusive": [(f, round(100 * n / total, 1)) for f, n in pick[:top]]}


def run(quick: bool = False, count: int | None = None, rounds: int | None = None) -> dict:
    if not wrk_load.available():
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    seconds = 3 if quick else 8
    sustained_s = 10 if quick else 30
    rounds = rounds or (1 if quick else 3)
    events = presign(count or (8000 if quick else 60000))
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="dtbench-") as tmp:
        run_no = 0
        for _ in range(rounds):  # alternate, so machine noise hits every server alike
            for kind in KINDS:
                run_no += 1
                server = start(kind, tmp, run_no)
                # The raw and floor servers store nothing (no dedup), so repeating events is
                # fine, and they would otherwise run out of them before the time is up.
                load = events[:-300] * 3 + events[-300:] if kind in ("raw", "floor") else events
                try:
                    results[kind].append(_measure(server, load, seconds))
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
            web = server.children()["web"]
            wrk_load.run(server.url, events[-300:], 1)
            _wait_drained(server)
            rss_start = _rss_mb(web)
            load = wrk_load.run(server.url, events[:-300], sustained_s, connections=CONCURRENCY)
            backlog = server.health()["queued"]
            rss_end = _rss_mb(web)
            drain_s = _wait_drained(server)
        finally:
            server.stop()
        run_no += 1
        server = ours(tmp, run_no)
        try:
            profile = _profile(server, presign(int(med["ours"]["acks_per_s"] * (PROFILE_S + 3)) + 1000, seed_base=200),
                               PROFILE_S, tmp)
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
        "status_503": load["statuses"].get("503", 0),
        "web_rss_start_mb": round(rss_start, 1),
        "web_rss_end_mb": round(rss_end, 1),
    }
    ratio = med["ours"]["acks_per_s"] / med["anchor"]["acks_per_s"]
    targets = {
        "acks_vs_anchor": ratio >= 3.0,
        "p99": med["ours"]["p99_ms"] <= 10.0,
        "handlers_keep_pace": (sustained["handler_ratio"] or 0) >= 0.95,
        "drain": drain_s <= 2.0,
        "rss_flat": rss_end <= rss_start * 1.1 + 5,
    }
    return {
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "rounds": rounds,
        "median": med,
        "all": results,
        "ratio": round(ratio, 2),
        "full_ratio": round(med["ours_full"]["acks_per_s"] / med["anchor"]["acks_per_s"], 2),
        "raw_ratio": round(med["raw"]["acks_per_s"] / med["anchor"]["acks_per_s"], 2),
        "floor_ratio": round(med["floor"]["acks_per_s"] / med["anchor"]["acks_per_s"], 2),
        "sustained": sustained,
        "profile": profile,
        "targets": targets,
        "target_met": all(targets.values()),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
