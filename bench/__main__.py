"""`python -m bench [--quick] [--only verify,receiver,coldstart,metrics] [--out BENCHMARKS.md]`"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

from . import coldstart, metrics_cost, receiver_load, verify_parse

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": None if load is None else round(load, 2),
    }


def _num(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def _ok(flag) -> str:
    return "n/a" if flag is None else ("met" if flag else "MISSED")


def render(m: dict, vp: dict | None, rl: dict | None, cs: dict | None, quick: bool, mc: dict | None = None) -> str:
    out = [
        "# Benchmarks",
        "",
        f"Measured {m['date']} on {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, {m['platform']};"
        f" load average {m['loadavg_at_start']} at start{' — QUICK smoke run, not representative' if quick else ''}.",
        "Reproduce with `make bench` (`python -m bench`; `--quick` for a smoke run). Every comparison is"
        " measured in the same run, interleaved, and reported as a median.",
        "",
    ]
    if vp:
        out += [
            "## 1. Verify + parse, per event",
            "",
            f"{vp['events']} generated events of every type (median body {vp['body_bytes_median']:.0f} bytes),"
            f" {vp['rounds']} interleaved rounds; microseconds per event.",
            "",
            "| path | µs/event | × stdlib floor |",
            "|---|---:|---:|",
            *(f"| {name.strip()} | {us:.1f} | {ratio:.2f} |" for name, us, ratio in vp["rows"]),
            "",
            f"Target: ours within 2× the stdlib floor — **{_ok(vp['target_met'])}** (ours = {vp['ours_vs_floor']}×"
            f" the floor, {vp['ours_vs_pyjwt']}× the obvious PyJWT path).",
            "",
        ]
    if rl:
        med = rl["median"]
        v, o = med["verify-only"], med["dtconnector serve"]
        out += [
            "## 2. Local receiver under load",
            "",
            f"{rl['count']} unique signed events per run, concurrency {rl['concurrency']}, keep-alive connections,"
            f" median of {rl['runs']} interleaved runs. The load generator (`dtconnector send`) and each server run"
            " in their own processes. `verify-only` is DT's docs' example shape (verify, decode, answer 200) under"
            " the same `ReceiverServer`; `dtconnector serve` verifies, parses, claims the eventId and enqueues it"
            " durably in SQLite (one transaction), logs a JSON line, and runs its worker (parse, ledger, device"
            " state, a second log line) in the same process. *Server CPU* is the server process's CPU time per"
            " event, the worker's catch-up included.",
            "",
            "| receiver | events/s | ack p50 ms | ack p99 ms | server CPU µs/event | worker catch-up after the run |",
            "|---|---:|---:|---:|---:|---:|",
            f"| verify-only | {v['events_per_s']:.0f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |"
            f" {_num(v['server_cpu_us_per_event'])} | – |",
            f"| dtconnector serve | {o['events_per_s']:.0f} | {o['p50_ms']:.1f} | {o['p99_ms']:.1f} |"
            f" {_num(o['server_cpu_us_per_event'])} | {o['drain_after_s']} s |",
            "",
            f"Target: ≥ 0.8× the verify-only throughput and p99 < 50 ms — **{_ok(rl['target_met'])}**"
            f" (ratio {rl['throughput_ratio']}, p99 {o['p99_ms']:.1f} ms).",
            "",
        ]
    if cs:
        out += [
            "## 3. Cold start (import time in a fresh interpreter)",
            "",
            f"Median of {cs['runs']} fresh processes each. *adds* = (SDK then entry module) − (SDK alone).",
            "",
            "| platform | module | alone ms | its SDK alone ms | adds to the SDK ms | ≤ 25 ms |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in cs["rows"]:
            if "absent" in r:
                out.append(f"| {r['platform']} | `{r['module']}` | – | – | – | {r['absent']} |")
            elif "sdk_alone_ms" in r:
                out.append(
                    f"| {r['platform']} | `{r['module']}` | {r['entry_alone_ms']} | {r['sdk_alone_ms']} ({r['sdk']}) |"
                    f" {r['adds_ms']} | {_ok(r['target_met'])} |"
                )
            else:
                out.append(f"| {r['platform']} | `{r['module']}` | {r['entry_alone_ms']} | – | – | – |")
        out += ["", f"Target: every entry module adds ≤ 25 ms — **{_ok(cs['target_met'])}**.", ""]
    if mc:
        out += metrics_cost.render(mc)
    out += ["## Closing note: missed targets, by how much, and what limits them", ""]
    notes = []
    if vp and not vp["target_met"]:
        rows = {name.strip(): us for name, us, _ in vp["rows"]}
        notes.append(
            f"- **Verify + parse** is {vp['ours_vs_floor']}× the stdlib floor (target 2×):"
            f" {rows.get('ours, verify only', 0):.0f} µs to verify and {rows.get('ours, parse_event only', 0):.0f} µs"
            " to parse, against a floor that decodes the body once and checks one HMAC. Verifying already runs on"
            " PyJWT's primitives with the key prepared once (PyJWT's own `decode` re-prepares it and checks base64"
            " in Python on every call, the 'PyJWT obvious' row). What is left over the floor is work the floor"
            " skips: decoding the token's header and claims (two more JSON documents), checking `exp`/`iat`, and"
            " validating the envelope and its RFC 3339 timestamp to the nanosecond."
        )
    if rl and not rl["target_met"]:
        v, o = rl["median"]["verify-only"], rl["median"]["dtconnector serve"]
        cpu = budget = ""
        if v["server_cpu_us_per_event"] and o["server_cpu_us_per_event"]:
            cpu = (
                f" The server CPU column is the limit: {o['server_cpu_us_per_event']:.0f} µs per event against"
                f" {v['server_cpu_us_per_event']:.0f} µs, and a CPython process runs its threads one at a time"
                " (one GIL), while on this machine the load generator takes most of the other core."
            )
            budget = f", some {0.25 * v['server_cpu_us_per_event']:.0f} µs"
        notes.append(
            f"- **Local receiver**: {rl['throughput_ratio']}× the verify-only throughput (target 0.8×), p99"
            f" {o['p99_ms']:.0f} ms (target 50 ms).{cpu} Both servers pay the same HTTP handling"
            " (`http.server`, most of the verify-only row); on top of it `dtconnector serve` parses the event,"
            " commits its claim and message (one SQLite transaction, one commit), writes two log lines, and its"
            " worker parses the event again, keeps the ledger and the device state and acknowledges the message."
            f" Reaching 0.8× would leave all of that 25 % of the verify-only cost{budget}. Tried and"
            " measured slower here: the worker in a second process (two processes writing one SQLite file pay"
            " for cache invalidation and lock waits), and group commit across request threads (the thread"
            f" handoffs cost more than the commits saved). At concurrency {rl['concurrency']} a closed-loop"
            f" sender sees latency ≈ {rl['concurrency']} / throughput, so p99 follows throughput; the"
            f" verify-only server's own p99 was {v['p99_ms']:.0f} ms in this run. Check the load average above"
            " before comparing runs."
        )
    if cs and cs["target_met"] is False:
        jwt_row = next((r for r in cs["rows"] if r["module"].startswith("jwt")), None)
        notes.append(
            "- **Cold start**: entry modules that import `core.receiver` at module level pay for PyJWT"
            + (f" ({jwt_row['entry_alone_ms']} ms alone here)" if jwt_row else "")
            + ", which imports `cryptography` (x509, …) whenever it is installed (the asymmetric extra). An SDK"
            " that already loads `cryptography` (Azure) hides that; boto3 and Flask do not. Options: import the"
            " verifier on the first request, or verify HS256 with the standard library and load PyJWT only for"
            " the asymmetric scheme."
        )
    if mc and not mc["target_met"]:
        notes.append(metrics_cost.note(mc))
    out += notes or ["Every target was met in this run."]
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="dtconnector performance comparisons")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (small counts, few repetitions)")
    parser.add_argument("--only", default="verify,receiver,coldstart,metrics", help="comma-separated sections")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="where to write the report ('-': nowhere)")
    parser.add_argument("--count", type=int, default=None, help="events per receiver run (default 20000)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",")}
    m = machine()
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, load {m['loadavg_at_start']}", flush=True)
    vp = rl = cs = mc = None
    if "verify" in only:
        print("\n(1) verify + parse per event ...", flush=True)
        vp = verify_parse.run(args.quick)
        for name, us, ratio in vp["rows"]:
            print(f"  {name:<55} {us:8.1f} µs  {ratio:5.2f}× floor")
        print(f"  target ours ≤ 2× floor: {_ok(vp['target_met'])} ({vp['ours_vs_floor']}×)")
    if "receiver" in only:
        print("\n(2) local receiver vs verify-only receiver, concurrency 32 ...", flush=True)
        rl = receiver_load.run(args.quick, count=args.count)
        for kind, r in rl["median"].items():
            print(f"  {kind:<20} {r['events_per_s']:8.0f} events/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms")
        print(f"  target ≥ 0.8× throughput and p99 < 50 ms: {_ok(rl['target_met'])} (ratio {rl['throughput_ratio']})")
    if "coldstart" in only:
        print("\n(3) cold start (import ms, fresh interpreter) ...", flush=True)
        cs = coldstart.run(args.quick)
        for r in cs["rows"]:
            if "absent" in r:
                print(f"  {r['module']:<32} absent: {r['absent']}")
            elif "sdk_alone_ms" in r:
                print(f"  {r['module']:<32} alone {r['entry_alone_ms']:7.1f}  SDK {r['sdk_alone_ms']:7.1f}"
                      f"  adds {r['adds_ms']:6.1f} ms  {_ok(r['target_met'])}")
            else:
                print(f"  {r['module']:<32} alone {r['entry_alone_ms']:7.1f} ms")
        print(f"  target each entry adds ≤ 25 ms: {_ok(cs['target_met'])}")
    if "metrics" in only:
        print("\n(4) metrics on the ingest path (CPU µs per accepted event) ...", flush=True)
        mc = metrics_cost.run(args.quick)
        for name, us, ratio, own, verdict in mc["rows"]:
            print(f"  {name:<32} {us:7.1f} µs ({ratio:5.3f}× off)  metrics alone {own:5.2f} µs → {verdict:5.3f}×")
        print(f"  target metrics add ≤ 5 %: {_ok(mc['target_met'])} (worst {mc['worst_ratio']}×)")
    if args.json:
        print(json.dumps({"machine": m, "verify_parse": vp, "receiver": rl, "coldstart": cs, "metrics": mc}, indent=2))
    if args.out != "-":
        Path(args.out).write_text(render(m, vp, rl, cs, args.quick, mc) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
