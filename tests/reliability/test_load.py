"""A scaled-down load run per platform: DT-like concurrent delivery with duplicates,
shuffled, then the end-state checks. `python -m reliability` runs the full-size version.

DT_LOAD_EVENTS (default 200 deliveries) and DT_LOAD_CONCURRENCY (default 16) scale it.
200 keeps every part of the scenario the assertions check: 154 unique events (3 of them
poison) on 12 devices, 40 of whose 50 device/type pairs get several events (so the
newest must win over older ones arriving later), and 46 duplicate deliveries, shuffled
and sent 16 at a time. More deliveries make the same checks take longer (600 took a
sixth of the suite's time); a real load's size is `python -m reliability`'s.
"""

from __future__ import annotations

import os
import time

import pytest

from reliability import workload
from reliability.inproc import deliver_all, percentile, state_snapshot
from tests.dt import SECRET

DELIVERIES = int(os.environ.get("DT_LOAD_EVENTS", "200"))
CONCURRENCY = int(os.environ.get("DT_LOAD_CONCURRENCY", "16"))


@pytest.mark.slow
def test_load_with_duplicates_shuffled_and_concurrent(platform, probe):
    w = workload.make(round(DELIVERIES / 1.3) - 3, duplicates=0.3, devices=12, poison=3, seed=42)
    started = time.perf_counter()
    deliveries = deliver_all(platform, w.deliveries, SECRET, concurrency=CONCURRENCY, timeout_s=120)
    elapsed = time.perf_counter() - started
    statuses = [d.status for d in deliveries]
    assert statuses.count(202) == len(w.unique)  # each unique event queued exactly once...
    assert statuses.count(200) == len(w.deliveries) - len(w.unique)  # ...every other copy a duplicate
    latencies = [t for d in deliveries for t in d.latencies]
    print(
        f"\n{len(w.deliveries)} deliveries ({len(w.unique)} unique) at concurrency {CONCURRENCY}: "
        f"{len(w.deliveries) / elapsed:.0f}/s, p99 {percentile(latencies, 99) * 1000:.0f} ms, "
        f"retries {sum(len(d.attempts) - 1 for d in deliveries)}"
    )
    assert platform.queue_depth() == len(w.unique)  # (IBM's harness counts from _all_docs)
    platform.drain()
    assert platform.queue_depth() == 0
    problems = workload.check(w, probe.completed, state_snapshot(platform, w.devices), platform.dead_letters())
    assert problems == []
