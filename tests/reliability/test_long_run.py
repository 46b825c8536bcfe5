"""The long-run row of `python -m reliability`, scaled down, on SQLite."""

from __future__ import annotations

from reliability import long_run


def test_records_stored_after_several_windows_stay_within_one_window():
    row = long_run.run("local", windows=3, per_window=6, ttl_s=1.0, secret="long-run-test-secret-0123456789abcdef")
    assert row.error == ""
    assert (row.windows, row.events) == (3, 18)
    assert row.stored_events == 0  # the last window expired and was swept
    assert 6 <= row.peak_events <= 2 * 6  # never more than one window's records
    assert row.stored_state == long_run.DEVICES
    assert "| local | 3 | 18 | 0 |" in "\n".join(long_run.render([row], 3, 6, 1.0))
