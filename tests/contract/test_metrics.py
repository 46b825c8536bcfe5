"""Metrics every platform must emit, read back from its native form (EMF lines, l2met
lines, JSON log lines, host log records, Prometheus text): after a scenario with known
counts, what the platform said equals what happened, exactly."""

from __future__ import annotations

from collections import Counter

from core import on
from core.metrics import (
    ACK_LATENCY,
    DEAD_LETTERED,
    END_TO_END_LAG,
    ENQUEUE_FAILURES,
    EVENTS_PROCESSED,
    HANDLER_RUNS,
    REQUESTS,
    RETRIES,
    STALE_STATE_SKIPPED,
)
from tests.dt import event_body, event_id_of, signed
from tests.metrics_native import key


def _reason(reply) -> str:
    payload = reply.json or {}
    return str(payload.get("reason") or payload.get("status") or payload.get("error"))


def test_metrics_equal_the_counts_of_a_known_scenario(platform):
    calls = Counter()

    @on("*")
    def ok(event):
        calls["ok"] += 1

    @on("*")
    def broken(event):
        if event.device_id == "bad-device":
            raise RuntimeError("bug in user code")

    newer = event_body(device="d-metrics", timestamp="2026-11-22T10:00:02Z")
    older = event_body(device="d-metrics", timestamp="2026-11-22T10:00:01Z")
    bad = event_body(device="bad-device")
    replies = []

    def send(body, headers, method="POST"):
        replies.append(platform.deliver(body, headers, method=method))
        return replies[-1]

    assert send(newer, signed(newer)).status == 202
    assert send(newer, signed(newer)).status == 200  # duplicate
    assert send(bad, signed(bad)).status == 202
    unsigned = event_body()
    assert send(unsigned, {"Content-Type": "application/json"}).status == 401  # missing header
    assert send(unsigned, signed(unsigned + b" ")).status == 401  # checksum of other bytes
    assert send(b"{not json", signed(b"{not json")).status == 400
    assert send(unsigned, signed(unsigned), method="GET").status == 405
    huge = event_body(data={"temperature": {"value": 1, "padding": "x" * 300_000}})
    assert send(huge, signed(huge)).status == 413
    lost = event_body()
    with platform.broken("queue"):
        assert send(lost, signed(lost)).status == 503
    platform.drain()  # newer is processed; bad fails max_attempts times and is dead-lettered
    assert send(older, signed(older)).status == 202
    platform.drain()  # older arrives after newer: its state write is skipped
    assert platform.dead_letters() == [event_id_of(bad)]

    got = platform.metrics()
    requests = Counter((str(r.status), _reason(r)) for r in replies)
    statuses = Counter(str(r.status) for r in replies)
    attempts = platform.max_attempts
    expected = Counter()
    for (status, reason), n in requests.items():
        expected[key(REQUESTS, status=status, reason=reason)] += n
    for status, n in statuses.items():
        expected[key(ACK_LATENCY, status=status)] += n
    if _reason(replies[-2]) == "event queue unavailable":  # a separate queue write failed
        expected[key(ENQUEUE_FAILURES)] += 1
    expected[key(EVENTS_PROCESSED, eventType="temperature")] = 2
    expected[key(END_TO_END_LAG, eventType="temperature")] = 2
    name = lambda f: f"{f.__module__}.{f.__qualname__}"  # noqa: E731  (how core names handlers)
    expected[key(HANDLER_RUNS, outcome="ok", handler=name(ok))] = 3  # newer, bad, older
    expected[key(HANDLER_RUNS, outcome="ok", handler=name(broken))] = 2  # newer, older
    expected[key(HANDLER_RUNS, outcome="error", handler=name(broken))] = attempts  # bad, each delivery
    expected[key(STALE_STATE_SKIPPED)] = 1
    expected[key(RETRIES)] = attempts - 1
    expected[key(DEAD_LETTERED)] = 1
    assert calls["ok"] == 3
    assert +got == +expected


def test_rejections_are_counted_by_reason(platform):
    body = event_body()
    for _ in range(3):
        assert platform.deliver(body, {"X-Dt-Signature": "not.a.jwt"}).status == 401
    got = platform.metrics()
    assert got[key(REQUESTS, status="401", reason="token is malformed")] == 3
    assert sum(v for (name, _), v in got.items() if name == REQUESTS) == 3
