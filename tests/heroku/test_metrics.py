"""The worker dyno samples the queue's depth as an l2met `sample#` line."""

from __future__ import annotations

import re

from tests.dt import event_body, signed


def test_worker_samples_the_backlog_when_it_starts(h):
    for _ in range(3):
        body = event_body()
        assert h.deliver(body, signed(body)).status == 202
    h.drain()
    samples = re.findall(r"sample#dt_queue_backlog=(\d+)", h.stdout.getvalue())
    assert samples[:1] == ["3"]  # sampled at start, before taking any message
