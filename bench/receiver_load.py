"""(2) The local receiver under load vs a verify-only receiver under the same server class.

Every process is separate: the server under test, and the load generator (the emulator,
`python -m emulator.cli`, concurrency 32, unique events, no duplicates), so neither
shares a GIL with the other. This process only orchestrates.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef0123456789"
URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/)")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_")}
    env.update(DT_SIGNATURE_SECRET=SECRET, PYTHONPATH=str(ROOT), **extra)
    return env


class Server:
    def __init__(self, argv: list[str], env: dict, cwd: str):
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        self.url = None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = URL_LINE.search(line)
            if m:
                self.url = m.group(1)
                break
        if self.url is None:
            self.stop()
            raise RuntimeError(f"server did not start: {' '.join(argv)}")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "healthz", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


def send(url: str, count: int, concurrency: int, seed: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "emulator.cli", "--url", url, "--count", str(count), "--devices", "100",
         "--concurrency", str(concurrency), "--seed", str(seed), "--json", "--no-progress",
         "--retry-base", "0.2"],
        env=_env(), cwd=str(ROOT), capture_output=True, text=True, check=False,
    )
    if out.returncode not in (0, 1):
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None where /proc is absent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(kind: str, count: int, concurrency: int, seed: int, tmp: str, log_level: str = "INFO") -> dict:
    if kind == "verify-only":
        argv = [sys.executable, "-m", "bench.verify_server", "--port", "0"]
    else:
        db = os.path.join(tmp, f"{kind}-{seed}.db")
        argv = [sys.executable, "-m", "local_receiver.cli", "serve", "--port", "0", "--db", db]
    server = Server(argv, _env(DT_LOG_LEVEL=log_level), tmp)
    try:
        send(server.url, 300, concurrency, seed + 1000)  # warm-up: connections, caches, WAL
        if kind != "verify-only":
            _wait_drained(server)
        cpu_before = _cpu_s(server.proc.pid)
        result = send(server.url, count, concurrency, seed)
        drain_s = None
        if kind != "verify-only":  # how long the worker needs to catch up afterwards
            drain_s = _wait_drained(server)
        cpu_after = _cpu_s(server.proc.pid)
        cpu_us = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / count * 1e6
        return {
            "events_per_s": result["events_per_s"],
            "p50_ms": result["ack_latency_ms"]["p50"],
            "p99_ms": result["ack_latency_ms"]["p99"],
            "accepted": result["accepted"],
            "non_2xx": result["sent"] - result["accepted"],
            "drain_after_s": drain_s,
            "server_cpu_us_per_event": None if cpu_us is None else round(cpu_us),
        }
    finally:
        server.stop()


def _wait_drained(server: Server, limit_s: float = 300) -> float:
    """Seconds until the server's queue is empty (its worker has caught up)."""
    t0 = time.monotonic()
    while server.health().get("queued", 0) > 0 and time.monotonic() - t0 < limit_s:
        time.sleep(0.1)
    return round(time.monotonic() - t0, 2)


def run(quick: bool = False, count: int | None = None, concurrency: int = 32, runs: int | None = None) -> dict:
    count = count or (2000 if quick else 20000)
    runs = runs or (1 if quick else 3)
    kinds = ["verify-only", "dtconnector serve"]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="dtbench-") as tmp:
        for r in range(runs):  # alternate, so machine noise hits both alike
            for kind in kinds:
                results[kind].append(one_run(kind, count, concurrency, seed=r + 1, tmp=tmp))
    med = {
        kind: {key: statistics.median(x[key] for x in rs) if rs[0][key] is not None else None
               for key in rs[0]}
        for kind, rs in results.items()
    }
    ratio = med["dtconnector serve"]["events_per_s"] / med["verify-only"]["events_per_s"]
    return {
        "count": count,
        "concurrency": concurrency,
        "runs": runs,
        "median": med,
        "all": results,
        "throughput_ratio": round(ratio, 2),
        "target_met": ratio >= 0.8 and med["dtconnector serve"]["p99_ms"] < 50,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
