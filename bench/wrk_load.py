"""Drive a receiver with wrk and pre-signed unique events (the signing is done before the
load, so the generator only replays bytes and is never the bottleneck).

Each wrk thread walks its own slice of the events, so no event is sent twice; the run
stops early (wrk's ``done``) rather than repeat one. Returns requests/s, latency
percentiles and the status counts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from emulator.generate import generate
from emulator.signing import sign

_LUA = r"""
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  thread:set("nthreads", %(threads)d)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  -- each thread keeps only its own slice: line i goes to thread (i - 1) %% nthreads
  events = {}
  local i = 0
  for line in io.lines("%(data)s") do
    if i %% nthreads == tid then
      local tab = line:find("\t", 1, true)
      table.insert(events, {line:sub(1, tab - 1), line:sub(tab + 1)})
    end
    i = i + 1
  end
  n = 1
  statuses = {}
end
function request()
  local e = events[n]
  if e == nil then
    wrk.thread:stop()
    e = events[1]
  end
  n = n + 1
  return wrk.format("POST", "/", {["Content-Type"]="application/json", ["X-Dt-Signature"]=e[2]}, e[1])
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local out = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do out[tostring(k)] = (out[tostring(k)] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(out) do table.insert(parts, string.format('"%%s":%%d', k, v)) end
  io.write(string.format('RESULT {"requests":%%d,"seconds":%%f,"p50_ms":%%f,"p99_ms":%%f,"max_ms":%%f,"errors":%%d,"statuses":{%%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ",")))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def presign(count: int, secret: str, seed: int) -> list[tuple[bytes, str]]:
    return [(e.body, sign(e.body, secret)) for e in generate(count, devices=100, seed=seed)]


def run(url: str, events: list[tuple[bytes, str]], seconds: float, connections: int = 32, threads: int = 2) -> dict:
    """One wrk run against `url` for `seconds` (or until the events run out)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "events.tsv"
        with data.open("wb") as f:
            for body, token in events:  # JSON bodies from the generator hold no tab or newline
                f.write(body + b"\t" + token.encode() + b"\n")
        script = Path(tmp) / "load.lua"
        script.write_text(_LUA % {"data": str(data), "threads": threads})
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    m = re.search(r"^RESULT (\{.*\})$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    result = json.loads(m.group(1))
    result["rate"] = result["requests"] / result["seconds"] if result["seconds"] else 0.0
    return result
