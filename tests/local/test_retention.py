"""The SQLite sweeper, the background cleanup thread, `store_report` and `dtconnector stats`."""

from __future__ import annotations

import json
import time

import pytest

from core.ports import COMPLETED, IN_PROGRESS, Claim, DeviceState
from core.retention import Retention

RERUN_WINDOW_S = Retention().rerun_window_s  # the default rule: 14 days of dead letters + 1 day
from dtconnector import cli
from local_receiver.app import LocalApp
from local_receiver.retention import SQLiteSweeper, store_report
from local_receiver.sqlite_store import Database, QueuedMessage, SQLiteClaimStore, SQLiteQueue, SQLiteStateStore

NOW = 2_000_000_000.0
DAY = 86_400.0


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _db(tmp_path, clock=None) -> Database:
    return Database(tmp_path / "events.db", clock or Clock())


def _keys(db: Database) -> set[str]:
    return {k for (k,) in db.query("SELECT key FROM claims")}


def test_sweep_removes_only_what_nobody_needs(tmp_path):
    db = _db(tmp_path)
    claims = SQLiteClaimStore(db)
    claims.create("done-expired", Claim(COMPLETED, NOW - 1, "a"))
    claims.create("done-live", Claim(COMPLETED, NOW + 60, "b"))
    claims.create("w_unfinished", Claim(IN_PROGRESS, NOW - 60, "c", ("h1",)))  # abandoned lease, progress kept
    claims.create("w_unfinished-old", Claim(IN_PROGRESS, NOW - RERUN_WINDOW_S - 1, "d", ("h1",)))
    queue = SQLiteQueue(db)
    queue.enqueue("{}", event_id="queued-long-ago")  # a queued event is never removed by age
    db.write("UPDATE queue SET visible_at = ?", (NOW - 100 * DAY,))
    SQLiteStateStore(db).put_if_newer(DeviceState("d1", "temperature", 1, "e1", "t", {}))

    result = SQLiteSweeper(db, dead_letter_retention_s=7 * DAY).sweep(NOW)

    assert result.removed == {"claims": 2}
    assert _keys(db) == {"done-live", "w_unfinished"}
    assert queue.depth() == 1
    assert store_report(db).counts["device_state"] == 1


def test_dead_letters_are_kept_for_their_retention_then_removed(tmp_path):
    clock = Clock()
    db = _db(tmp_path, clock)
    queue = SQLiteQueue(db)
    for n in range(2):
        queue.enqueue("{}", event_id=f"e{n}")
        [(msg_id,)] = db.query("SELECT id FROM queue")
        queue.dead_letter(QueuedMessage(msg_id, f"e{n}", "{}", 5), "boom")
        clock.now += DAY
    sweeper = SQLiteSweeper(db, dead_letter_retention_s=1.5 * DAY)
    assert sweeper.sweep(clock.now).removed == {"dead_letters": 1}  # died 2 days ago
    assert [d["eventId"] for d in queue.dead_letters()] == ["e1"]


def test_a_sweep_is_bounded_and_says_when_more_is_left(tmp_path):
    db = _db(tmp_path)
    claims = SQLiteClaimStore(db)
    for n in range(25):
        claims.create(f"k{n}", Claim(COMPLETED, NOW - 1, "v"))
    sweeper = SQLiteSweeper(db, dead_letter_retention_s=DAY)
    first = sweeper.sweep(NOW, limit=10)
    assert (first.removed, first.more) == ({"claims": 10}, True)
    assert len(_keys(db)) == 15


def test_a_claim_taken_over_before_the_sweep_is_kept(tmp_path):
    db = _db(tmp_path)
    claims = SQLiteClaimStore(db)
    claims.create("k", Claim(COMPLETED, NOW - 1, "old"))
    assert claims.replace("k", "old", Claim(IN_PROGRESS, NOW + 8, "new"))  # a DT retry took it over
    SQLiteSweeper(db, dead_letter_retention_s=DAY).sweep(NOW)
    assert claims.get("k") == Claim(IN_PROGRESS, NOW + 8, "new")


def test_a_round_removes_everything_expired_however_much(tmp_path):
    """No fixed capacity per round (it was 50 batches of 200 per minute, ~83 events/s):
    a round works off the whole backlog in bounded batches."""
    from local_receiver.retention import BackgroundSweeper

    clock = Clock()
    db = _db(tmp_path, clock)
    with db.transaction() as conn:
        conn.executemany(
            "INSERT INTO claims (key, status, expires_at, version) VALUES (?, ?, ?, 'v')",
            [(f"k{n}", COMPLETED, NOW - 1 - n % 100) for n in range(30_000)],
        )
    result = BackgroundSweeper(SQLiteSweeper(db, DAY), clock).run_once()
    assert (result.removed, result.more, _keys(db)) == ({"claims": 30_000}, False, set())


def test_the_next_round_comes_when_the_next_record_is_due(tmp_path):
    """Rounds follow expiry: as soon as something is due (at least MIN_INTERVAL_S apart,
    so work comes in batches), at most DT_SWEEP_INTERVAL_S apart when nothing is."""
    from local_receiver.retention import MIN_INTERVAL_S, BackgroundSweeper

    clock = Clock()
    db = _db(tmp_path, clock)
    sweeper = SQLiteSweeper(db, dead_letter_retention_s=DAY)
    background = BackgroundSweeper(sweeper, clock, interval_s=60.0)
    assert (sweeper.next_removal(), background.next_wait()) == (None, 60.0)
    claims = SQLiteClaimStore(db)
    claims.create("unfinished", Claim(IN_PROGRESS, NOW - 10, "v", ("h1",)))
    assert sweeper.next_removal() == NOW - 10 + sweeper.retention.rerun_window_s
    claims.create("completed", Claim(COMPLETED, NOW + 2.5, "v"))
    assert (sweeper.next_removal(), background.next_wait()) == (NOW + 2.5, 2.5)
    claims.create("due", Claim(COMPLETED, NOW - 5, "v"))
    assert background.next_wait() == MIN_INTERVAL_S
    background.run_once()
    assert _keys(db) == {"unfinished", "completed"}


def test_the_sweeper_reads_only_what_it_removes(tmp_path):
    """Unfinished records kept for the rerun window are not in the completed range, and the
    reverse: each DELETE is a range scan of the (status, expires_at) index."""
    db = _db(tmp_path)
    plans = [
        " ".join(row[-1] for row in db.query("EXPLAIN QUERY PLAN SELECT key FROM claims WHERE status = ? AND expires_at <= ?", (status, NOW)))
        for status in (COMPLETED, IN_PROGRESS)
    ]
    assert all("claims_removable (status=? AND expires_at<?)" in plan for plan in plans), plans


def test_the_receiver_sweeps_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setenv("DT_SWEEP_INTERVAL_S", "0.05")
    app = LocalApp(tmp_path / "events.db", retry_base_s=0)
    try:
        app.claims.create("expired", Claim(COMPLETED, time.time() - 1, "v"))
        app.start_worker()
        deadline = time.monotonic() + 10
        while app.claims.get("expired") is not None:
            assert time.monotonic() < deadline, "the background sweeper never removed the expired claim"
            time.sleep(0.05)
    finally:
        app.stop()


def test_store_report_counts_each_kind_and_its_oldest(tmp_path):
    db = _db(tmp_path)
    claims = SQLiteClaimStore(db)
    claims.create("e1", Claim(COMPLETED, NOW + 10, "v"))
    claims.create("e2", Claim(COMPLETED, NOW + 20, "v"))
    claims.create("w_e1", Claim(COMPLETED, NOW + 30, "v"))
    SQLiteQueue(db).enqueue("{}", event_id="e2")
    report = store_report(db)
    assert report.counts == {"claims": 2, "ledger": 1, "queue": 1, "dead_letters": 0, "device_state": 0}
    assert report.oldest == {"claims_earliest_expiry": NOW + 10, "queue": NOW}
    assert report.total == 4


def test_stats_command_prints_the_store_size(tmp_path, capsys):
    path = tmp_path / "events.db"
    db = Database(path)
    SQLiteClaimStore(db).create("e1", Claim(COMPLETED, time.time() + 60, "v"))
    db.close()
    assert cli.main(["stats", "--db", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["store"]
    assert out["records"]["claims"] == 1
    assert out["total"] == 1
    assert "claims_earliest_expiry" in out["oldest"]


def test_a_bad_retention_setting_stops_serve_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DT_SIGNATURE_SECRET", "s" * 40)
    monkeypatch.setenv("DT_DEAD_LETTER_RETENTION_S", "two weeks")
    assert cli.main(["serve", "--db", str(tmp_path / "events.db"), "--port", "0"]) == 2
    assert "DT_DEAD_LETTER_RETENTION_S must be a number" in capsys.readouterr().err


def test_stats_text_says_when_the_earliest_claim_expires(tmp_path, capsys):
    path = tmp_path / "events.db"
    db = Database(path)
    SQLiteClaimStore(db).create("e1", Claim(COMPLETED, time.time() + 2 * 3600, "v"))
    db.close()
    assert cli.main(["stats", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stored records         1" in out
    assert "oldest claims earliest expiry: in 2.0 h" in out


@pytest.mark.parametrize("name, value", [("DT_HTTP_BODY_TIMEOUT_S", "soon"), ("DT_HTTP_MAX_CONNECTIONS", "0")])
def test_a_bad_http_limit_stops_serve_with_a_clear_message(tmp_path, monkeypatch, capsys, name, value):
    monkeypatch.setenv("DT_SIGNATURE_SECRET", "s" * 40)
    monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--db", str(tmp_path / "events.db"), "--port", "0"]) == 2
    assert name in capsys.readouterr().err
