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


def receiver_section(rl: dict) -> list[str]:
    med, sus, t = rl["median"], rl["sustained"], rl["targets"]
    rows = [
        f"| {receiver_load.LABELS[kind]} | {r['acks_per_s']:.0f} | {r['acks_per_s'] / med['anchor']['acks_per_s']:.2f} |"
        f" {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['non_2xx']:.0f} ({r['status_503']:.0f}) | {r['cpu_us_per_ack']:.0f} |"
        for kind, r in med.items()
    ]
    out = [
        "## 2. Local receiver under load: the machine's ceiling, DT's Flask receiver (the anchor), ours",
        "",
        f"wrk, concurrency {rl['concurrency']}, keep-alive, unique events signed before the load;"
        f" {rl['rounds']} interleaved rounds of {rl['seconds']} s each, medians. *uvicorn raw*: an ASGI app that"
        " reads the body and answers 202 (`bench/raw_asgi.py`; one process, httptools, uvloop): what one Python"
        " process answers here, nothing verified or stored. *Floor*: our web process with nothing after the"
        " checks (`bench/verify_only.py`: the same serving, ASGI app and `Receiver.admit`: the signature verified,"
        " the event parsed, the metrics recorded; then 202, nothing stored, no worker): a receiver that also stores"
        " each event and runs its handler on this machine answers less, whatever its design."
        " *Anchor*: DT's documented Flask receiver"
        " (`bench/anchor_flask.py`: PyJWT verify, SHA-256 body checksum, 200; no dedup, no queue) under gunicorn"
        " with 2 sync workers. *Ours*: `dtconnector serve`, a web process (uvicorn + httptools + uvloop: verify,"
        " parse, claim the eventIds and enqueue in SQLite by group commit: two statements and one JSON log line"
        " per commit) and a worker process (a handler appending one line to a file, `bench/append_handler.py`;"
        " the ledger, device state and acknowledgements, one statement each per batch).",
        "",
        "| server | acks/s | × anchor | p50 ms | p99 ms | non-2xx (of which 503) | server CPU µs/ack |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "*Server CPU* is the CPU time of the server's whole process group per acknowledgement (gunicorn's"
        " master and two workers; our supervisor, web and worker processes, the handler included).",
        "",
        f"Sustained run of ours, {sus['seconds']} s: **{sus['acks_per_s']:.0f} acks/s**, handlers"
        f" **{sus['handled_per_s']:.0f}/s** during the load ({sus['handler_ratio']}× the ack rate), backlog"
        f" {sus['backlog_at_end']} at the end, drained in {sus['drain_s']} s; p99 {sus['p99_ms']:.1f} ms;"
        f" {sus['non_2xx']} non-2xx, of which 503 {sus['status_503']} (past `DT_MAX_BACKLOG` a 503 with"
        " `Retry-After` answers at once, so a closed-loop sender makes many: DT retries them later);"
        f" the web process's RSS {sus['web_rss_start_mb']} MB at the start,"
        f" {sus['web_rss_end_mb']} MB at the end.",
        "",
        f"Targets: acks/s ≥ 3× anchor — **{_ok(t['acks_vs_anchor'])}** ({rl['ratio']}×); p99 ≤ 10 ms —"
        f" **{_ok(t['p99'])}** ({med['ours']['p99_ms']:.1f} ms); handlers ≥ 0.95× acks —"
        f" **{_ok(t['handlers_keep_pace'])}** ({sus['handler_ratio']}×); backlog drained ≤ 2 s —"
        f" **{_ok(t['drain'])}** ({sus['drain_s']} s); web RSS flat — **{_ok(t['rss_flat'])}**."
        f" With `DT_SQLITE_SYNCHRONOUS=FULL` (no target): {rl['full_ratio']}× the anchor.",
        "",
    ]
    profile = rl.get("profile")
    if profile:
        out += ["Where the time goes (py-spy `--gil`, 250 Hz, 5 s of the same load; % of each process's samples"
                " of the thread running Python):", ""]
        for role in ("web", "worker"):
            p = profile.get(role)
            if not p or not p["samples"]:
                continue
            out += [f"*{role} process* ({p['samples']} samples) — inclusive: "
                    + "; ".join(f"`{f}` {pct}%" for f, pct in p["inclusive"][:8])
                    + ". Own time: " + "; ".join(f"`{f}` {pct}%" for f, pct in p["own"][:8]) + ".", ""]
    return out


#: CPU µs per event of the durable pieces, measured one by one with the perf harnesses (not in
#: this run): the group write at 32 events a commit 31, the worker's SQLite 60, the bench's
#: handler 25, the worker's parse 14. What a receiver must spend beyond the floor row.
DURABLE_PIECES_US = 130


def receiver_note(rl: dict) -> str:
    o, a, r, f = (rl["median"][k] for k in ("ours", "anchor", "raw", "floor"))
    missed = [name for name, ok in rl["targets"].items() if not ok]
    cores = os.cpu_count() or 1
    budget = cores * 1e6 / (3 * a["acks_per_s"])  # CPU µs per event the whole server may spend at 3x
    left = budget - f["cpu_us_per_ack"]
    verdict = ("**The 3× target is out of reach on this machine for any design built on this HTTP stack**, and the"
               " same run shows why." if left < DURABLE_PIECES_US else
               "The same run bounds what any design on this HTTP stack could reach.")
    return (
        f"- **Local receiver** (missed: {', '.join(missed)}): {rl['ratio']}× the anchor's acks/s (target 3×), p99"
        f" {o['p99_ms']:.0f} ms (target 10 ms). {verdict} At 3× the anchor"
        f" ({3 * a['acks_per_s']:.0f}/s) the server's processes may spend at most {cores} cores ÷ that rate ="
        f" **{budget:.0f} µs of CPU per event**, everything included (less in fact: wrk shares the cores). The floor"
        f" row, our web process with nothing stored, already spends {f['cpu_us_per_ack']:.0f} µs per request"
        f" ({f['acks_per_s']:.0f}/s, {rl['floor_ratio']}× the anchor, from one process): uvicorn's HTTP"
        f" ({r['cpu_us_per_ack']:.0f} µs in the raw row), verifying and parsing (section 1), the ASGI app and the"
        f" metrics. That leaves {max(0.0, left):.0f} µs per event for everything durable:"
        " the group-committed claim and enqueue, and in the worker the parse, the ledger, the device state, the"
        " acknowledgement and the handler itself. Ours spends"
        f" {o['cpu_us_per_ack'] - f['cpu_us_per_ack']:.0f} µs on those ({o['cpu_us_per_ack']:.0f} µs per event"
        f" in all; the anchor {a['cpu_us_per_ack']:.0f} µs, storing nothing). Measured piece by piece (CPU per"
        " event): the group write 31 µs an event at 32 events a commit, 57 µs at 4; in the worker SQLite about"
        " 60 µs (its ledger rows, keyed by random event ids, dirty a page each), the handler 25 µs, parsing 14 µs,"
        " and handing events between the loop, the writer thread and the worker process the rest: with free"
        f" hand-offs, the pieces measured by hand add up to about {DURABLE_PIECES_US} µs. What keeps ours from that"
        " bound is as much waiting as work (measured by hand, below section 2): under this load about a quarter of"
        " the machine's CPU time stays idle, and the web process is busy 0.75 to 0.8 of a core; with the worker"
        " process paused (SIGSTOP) it is busy 1.1 cores and acknowledges 1.3 to 2× as many. It waits for a core"
        " and for the worker's turns on the SQLite file's one write lock, which the web process's group commits"
        " need too. The worker now reads and parses each batch before it takes that lock, so it holds it only for"
        " its writes and the commit: 80 to 91 µs per event at batches of 25 (107 to 157 before) and 63 to 73 at"
        " batches of 64 (80 to 88 before), three interleaved runs each of"
        " `python -m bench.write_turn`. That took the idle share under load from 25 to 21 % and the"
        " acknowledgements up about 4 % (five interleaved pairs, by hand), and a prototype giving the worker a"
        " second file with a write lock of its own took the idle share to 12–17 % with no consistent gain in"
        " throughput: the lock no longer limits ours, the two cores do. What would close the gap is less CPU per"
        " event: our web process's own checks and serving cost"
        f" {f['cpu_us_per_ack'] - r['cpu_us_per_ack']:.0f} µs per request over the raw row, the worker about"
        " 150 to 170 µs per event in-process (`python -m bench.write_turn`), its handler included. The p99"
        " target follows from throughput: a closed-loop sender at concurrency 32 sees latency ≈ 32 ÷ throughput"
        " (10 ms needs well over 3,200 acks/s at the median, more at the tail)."
    )


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
        out += receiver_section(rl)
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
        notes.append(receiver_note(rl))
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
        print("\n(2) uvicorn raw, DT's Flask receiver (gunicorn, 2 sync), dtconnector serve; wrk concurrency 32 ...",
              flush=True)
        rl = receiver_load.run(args.quick, count=args.count)
        if "skipped" in rl:
            print(f"  skipped: {rl['skipped']}")
        else:
            for kind, r in rl["median"].items():
                print(f"  {kind:<10} {r['acks_per_s']:8.0f} acks/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
                      f"  {r['cpu_us_per_ack']:6.0f} µs CPU/ack")
            sus = rl["sustained"]
            print(f"  sustained {sus['seconds']} s: {sus['acks_per_s']:.0f} acks/s, handlers {sus['handled_per_s']:.0f}/s"
                  f" ({sus['handler_ratio']}×), backlog {sus['backlog_at_end']}, drained in {sus['drain_s']} s,"
                  f" web RSS {sus['web_rss_start_mb']} → {sus['web_rss_end_mb']} MB")
            print(f"  targets: {rl['targets']} (ratio {rl['ratio']}, FULL {rl['full_ratio']})")
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
