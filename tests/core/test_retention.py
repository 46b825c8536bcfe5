"""core.retention: the one rule for removing records, and the batch loop."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from core.ports import COMPLETED, IN_PROGRESS, Claim
from core.retention import (
    DEFAULT_DEAD_LETTER_RETENTION_S,
    ExpiredRecordSweeper,
    StoreReport,
    SweepResult,
    dead_letter_retention_s,
    REDELIVERY_WINDOW_S,
    Retention,
    sweep_until_done,
)


def test_a_completed_claim_goes_when_its_window_ends():
    claim = Claim(COMPLETED, 100.0, "v")
    assert Retention().removable_at(claim) == 100.0
    assert not Retention().is_removable(claim, 99.9)
    assert Retention().is_removable(claim, 100.0)


def test_an_unfinished_claim_outlives_every_dead_letter_that_may_rerun_it():
    """Its recorded progress is what a requeued dead letter needs: it stays for the
    dead-letter retention plus the queue's own redeliveries before that."""
    rule = Retention(dead_letter_s=1000.0)
    claim = Claim(IN_PROGRESS, 100.0, "v", ("h1",))
    assert rule.rerun_window_s == 1000.0 + REDELIVERY_WINDOW_S
    assert rule.removable_at(claim) == 100.0 + 1000.0 + REDELIVERY_WINDOW_S
    assert not rule.is_removable(claim, 100.0 + 1000.0 + REDELIVERY_WINDOW_S - 1)
    assert Retention().rerun_window_s == DEFAULT_DEAD_LETTER_RETENTION_S + REDELIVERY_WINDOW_S


def test_a_completion_after_a_failure_is_remembered_for_the_rerun_window():
    rule = Retention(dead_letter_s=1000.0)
    assert rule.completed_ttl_s(60.0, after_failure=False) == 60.0
    assert rule.completed_ttl_s(60.0, after_failure=True) == 1000.0 + REDELIVERY_WINDOW_S
    assert rule.completed_ttl_s(10 * REDELIVERY_WINDOW_S, after_failure=True) == 10 * REDELIVERY_WINDOW_S
    assert Retention.from_env({"DT_DEAD_LETTER_RETENTION_S": "7"}).dead_letter_s == 7.0


def test_dead_letter_retention_comes_from_the_environment():
    assert dead_letter_retention_s({}) == DEFAULT_DEAD_LETTER_RETENTION_S
    assert dead_letter_retention_s({"DT_DEAD_LETTER_RETENTION_S": "3600"}) == 3600.0
    with pytest.raises(ConfigError, match="DT_DEAD_LETTER_RETENTION_S"):
        dead_letter_retention_s({"DT_DEAD_LETTER_RETENTION_S": "soon"})


class Batches:
    """Removes `batch` records per call until `left` is exhausted."""

    def __init__(self, left: int):
        self.left = left
        self.calls = 0

    def sweep(self, now: float, limit: int = 200) -> SweepResult:
        self.calls += 1
        n = min(self.left, limit)
        self.left -= n
        result = SweepResult(more=self.left > 0)
        result.add("claims", n)
        return result


def test_sweep_until_done_repeats_bounded_batches_with_pauses():
    sweeper = Batches(25)
    assert isinstance(sweeper, ExpiredRecordSweeper)
    pauses: list[float] = []
    result = sweep_until_done(sweeper, 0.0, limit=10, pause_s=0.5, wait=pauses.append)
    assert (result.removed, result.more, sweeper.calls) == ({"claims": 25}, False, 3)
    assert pauses == [0.5, 0.5]


def test_sweep_until_done_has_no_fixed_cap_but_stops_at_a_budget_or_when_told():
    assert sweep_until_done(Batches(10_000), 0.0, limit=10).removed == {"claims": 10_000}
    assert sweep_until_done(Batches(100), 0.0, limit=10, max_batches=2).removed == {"claims": 20}
    ticks = iter(range(100))
    timed = sweep_until_done(Batches(100), 0.0, limit=10, budget_s=3, monotonic=lambda: next(ticks))
    assert (timed.removed, timed.more) == ({"claims": 30}, True)
    stopped = sweep_until_done(Batches(100), 0.0, limit=10, pause_s=1, wait=lambda s: True)
    assert (stopped.removed, stopped.more) == ({"claims": 10}, True)


def test_store_report_renders_ages():
    report = StoreReport({"claims": 2, "queue": 1}, {"queue": 90.0})
    assert report.to_dict(100.0) == {
        "records": {"claims": 2, "queue": 1},
        "total": 3,
        "oldest": {"queue": {"at": 90.0, "ageS": 10.0}},
    }
