"""`python -m bench [--quick] [--only verify,receiver,coldstart,metrics,heroku] [--out BENCHMARKS.md]`"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

from . import coldstart, heroku_load, metrics_cost, receiver_load, verify_parse

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


def render(m: dict, vp: dict | None, rl: dict | None, cs: dict | None, quick: bool, mc: dict | None = None,
           hl: dict | None = None) -> str:
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
    if rl and "skipped" in rl:
        out += ["## 2. Local receiver under load", "", f"Skipped: {rl['skipped']}.", ""]
    elif rl:
        a, o, sus = rl["median"]["anchor"], rl["median"]["ours"], rl["sustained"]
        t = rl["targets"]
        out += [
            "## 2. Local receiver under load, against DT's documented Flask receiver",
            "",
            f"wrk, concurrency {rl['concurrency']}, keep-alive, unique events signed before the load;"
            f" {rl['rounds']} interleaved rounds of {rl['seconds']} s each, medians. *Anchor*: DT's documented"
            " Flask receiver (`bench/anchor_flask.py`: PyJWT verify, SHA-256 body checksum, 200; no dedup, no"
            " queue) under gunicorn with 2 sync workers. *Ours*: `dtconnector serve` (uvicorn + httptools +"
            " uvloop, one process): verify, parse, claim the eventId and enqueue durably in SQLite, JSON log"
            " line, and the worker (handlers, ledger, device state) in the same process.",
            "",
            "| receiver | acks/s | p50 ms | p99 ms | non-2xx | server CPU µs/ack |",
            "|---|---:|---:|---:|---:|---:|",
            f"| anchor (Flask, gunicorn 2 sync) | {a['acks_per_s']:.0f} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} |"
            f" {a['non_2xx']:.0f} | {a['cpu_us_per_ack']:.0f} |",
            f"| dtconnector serve | {o['acks_per_s']:.0f} | {o['p50_ms']:.1f} | {o['p99_ms']:.1f} | {o['non_2xx']:.0f} |"
            f" {o['cpu_us_per_ack']:.0f} |",
            "",
            "*Server CPU* is the CPU time of the server's whole process group per acknowledgement (gunicorn's"
            " master and two workers; our one process, its worker thread's handlers included).",
            "",
            f"Sustained run of ours, {sus['seconds']} s: **{sus['acks_per_s']:.0f} acks/s**, handlers"
            f" **{sus['handled_per_s']:.0f}/s** during the load ({sus['handler_ratio']}× the ack rate), backlog"
            f" {sus['backlog_at_end']} at the end, drained in {sus['drain_s']} s; p99 {sus['p99_ms']:.1f} ms.",
            "",
            f"Targets: acks/s ≥ 1.5× anchor — **{_ok(t['acks_vs_anchor'])}** ({rl['ratio']}×); p99 ≤ 15 ms —"
            f" **{_ok(t['p99'])}** ({o['p99_ms']:.1f} ms); handlers ≥ 0.9× acks — **{_ok(t['handlers_keep_pace'])}**;"
            f" backlog drained ≤ 2 s — **{_ok(t['drain'])}**.",
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
    if hl:
        out += heroku_load.render(hl)
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
    if rl and "skipped" not in rl and not rl["target_met"]:
        o, a = rl["median"]["ours"], rl["median"]["anchor"]
        notes.append(
            f"- **Local receiver**: {rl['ratio']}× the anchor's acks/s (target 1.5×), p99 {o['p99_ms']:.0f} ms"
            f" (target 15 ms; the anchor's own p99 was {a['p99_ms']:.0f} ms). At concurrency"
            f" {rl['concurrency']} a closed-loop sender sees latency ≈ {rl['concurrency']} / throughput, so p99"
            " follows throughput and the machine's load (see the load average above). Ours runs in one process"
            f" (one SQLite owner, one GIL) and spends {o['cpu_us_per_ack']:.0f} µs of CPU per event, handlers"
            f" included, against the anchor's {a['cpu_us_per_ack']:.0f} µs spread over two worker processes: on"
            " two cores the anchor can use both, ours one (the other is shared with wrk). Verify + parse alone is"
            " section 1's figure; the worker parses the event again. Closing the gap needs more than one process"
            " taking requests: the Redis receiver (`heroku.asgi`) scales that way; on SQLite one process owns"
            " the file."
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
    if hl and "skipped" not in hl and not hl["target_met"]:
        notes.append(heroku_load.note(hl))
    out += notes or ["Every target was met in this run."]
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="dtconnector performance comparisons")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (small counts, few repetitions)")
    parser.add_argument("--only", default="verify,receiver,coldstart,metrics,heroku", help="comma-separated sections")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="where to write the report ('-': nowhere)")
    parser.add_argument("--count", type=int, default=None, help="events signed for the interleaved runs (default 40000)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",")}
    m = machine()
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, load {m['loadavg_at_start']}", flush=True)
    vp = rl = cs = mc = hl = None
    if "verify" in only:
        print("\n(1) verify + parse per event ...", flush=True)
        vp = verify_parse.run(args.quick)
        for name, us, ratio in vp["rows"]:
            print(f"  {name:<55} {us:8.1f} µs  {ratio:5.2f}× floor")
        print(f"  target ours ≤ 2× floor: {_ok(vp['target_met'])} ({vp['ours_vs_floor']}×)")
    if "receiver" in only:
        print("\n(2) dtconnector serve vs DT's Flask receiver (gunicorn, 2 sync), wrk concurrency 32 ...", flush=True)
        rl = receiver_load.run(args.quick, count=args.count)
        if "skipped" in rl:
            print(f"  skipped: {rl['skipped']}")
        else:
            for kind, r in rl["median"].items():
                print(f"  {kind:<8} {r['acks_per_s']:8.0f} acks/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms")
            sus = rl["sustained"]
            print(f"  sustained {sus['seconds']} s: {sus['acks_per_s']:.0f} acks/s, handlers {sus['handled_per_s']:.0f}/s"
                  f" ({sus['handler_ratio']}×), backlog {sus['backlog_at_end']}, drained in {sus['drain_s']} s")
            print(f"  targets: {rl['targets']} (ratio {rl['ratio']})")
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
    if "heroku" in only:
        print("\n(5) the Heroku web dyno (web + worker + redis AOF everysec) vs DT's Flask receiver, wrk 32 ...", flush=True)
        hl = heroku_load.run(args.quick, count=args.count)
        heroku_load.print_summary(hl)
    if args.json:
        print(json.dumps({"machine": m, "verify_parse": vp, "receiver": rl, "coldstart": cs, "metrics": mc,
                          "heroku": hl}, indent=2))
    if args.out != "-":
        Path(args.out).write_text(render(m, vp, rl, cs, args.quick, mc, hl) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
