"""Bounded storage for the SQLite file: core's `ExpiredRecordSweeper` and the store report.

SQLite has no TTL, so the receiver removes what `core.retention` says nobody needs
(expired claims and ledger entries, dead letters past their retention) in a background
thread: one short ``DELETE ... LIMIT`` statement per batch, each holding the database
lock only for that statement, with a pause between batches so ingest is never queued
behind the cleanup. Deleted pages are reused by later inserts, so the file stops growing
once it holds about one dedup window of events.

Cleanup keeps pace with ingest at any rate: a round removes batches for as long as more
has expired (no cap per round), and the next round starts when the next record becomes
removable (`SQLiteSweeper.next_removal`, one index lookup), at least `MIN_INTERVAL_S`
later so work comes in batches, at most ``DT_SWEEP_INTERVAL_S`` when nothing is due.
Each kind of record is found by a range scan of the ``claims_removable`` index
(status, expires_at), so a round never reads a record it cannot remove.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from core.logs import event_log
from core.ports import COMPLETED, IN_PROGRESS, StoreError
from core.retention import DEFAULT_SWEEP_BATCH, Retention, StoreReport, SweepResult, sweep_until_done
from core.worker import WORKER_NAMESPACE

from .sqlite_store import Database

#: The longest wait between two rounds when nothing is due (``DT_SWEEP_INTERVAL_S``).
DEFAULT_SWEEP_INTERVAL_S = 60.0
#: The shortest: expiries are collected for at least this long before a round removes them.
MIN_INTERVAL_S = 1.0
#: Pause between batches of one round, so waiting ingest requests go first.
BATCH_PAUSE_S = 0.01


class SQLiteSweeper:
    """Removes expired claims and old dead letters; never queued messages or device state.

    Each DELETE re-checks the rule in its own WHERE clause, inside the statement that
    deletes, so a claim taken over or renewed since it was seen is never removed."""

    def __init__(self, db: Database, dead_letter_retention_s: float):
        self._db = db
        self.retention = Retention(dead_letter_retention_s)

    def _delete_claims(self, status: str, removable_before: float, limit: int) -> int:
        return self._db.write(
            "DELETE FROM claims WHERE key IN"
            " (SELECT key FROM claims WHERE status = ? AND expires_at <= ? ORDER BY expires_at LIMIT ?)",
            (status, removable_before, limit),
            durable=False,
        )

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult:
        result = SweepResult()
        completed = self._delete_claims(COMPLETED, now, limit)
        unfinished = self._delete_claims(IN_PROGRESS, now - self.retention.rerun_window_s, limit)
        dead = self._db.write(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE dead_at <= ? LIMIT ?)",
            (now - self.retention.dead_letter_s, limit),
            durable=False,
        )
        result.add("claims", completed + unfinished)
        result.add("dead_letters", dead)
        result.more = max(completed, unfinished, dead) >= limit
        return result

    def next_removal(self) -> float | None:
        """When the next record becomes removable (epoch seconds), or None if none will."""
        [(completed, unfinished)] = self._db.query(
            "SELECT (SELECT min(expires_at) FROM claims WHERE status = ?),"
            " (SELECT min(expires_at) FROM claims WHERE status = ?)",
            (COMPLETED, IN_PROGRESS),
        )
        [(dead,)] = self._db.query("SELECT min(dead_at) FROM dead_letters")
        moments = [
            at + delay
            for at, delay in ((completed, 0.0), (unfinished, self.retention.rerun_window_s), (dead, self.retention.dead_letter_s))
            if at is not None
        ]
        return min(moments, default=None)


def store_report(db: Database) -> StoreReport:
    """Record counts by kind and the oldest of each: what `dtconnector stats` prints."""
    ledger_prefix = WORKER_NAMESPACE + "_"
    [(ingest, ledger, claims_from)] = db.query(
        "SELECT coalesce(sum(substr(key, 1, ?) <> ?), 0), coalesce(sum(substr(key, 1, ?) = ?), 0),"
        " min(expires_at) FROM claims",
        (len(ledger_prefix), ledger_prefix, len(ledger_prefix), ledger_prefix),
    )
    [(queued, queued_from)] = db.query("SELECT count(*), min(visible_at) FROM queue")
    [(dead, dead_from)] = db.query("SELECT count(*), min(dead_at) FROM dead_letters")
    [(states,)] = db.query("SELECT count(*) FROM device_state")
    counts = {"claims": ingest, "ledger": ledger, "queue": queued, "dead_letters": dead, "device_state": states}
    oldest = {
        kind: float(at)
        for kind, at in (("claims_earliest_expiry", claims_from), ("queue", queued_from), ("dead_letters", dead_from))
        if at is not None
    }
    return StoreReport(counts, oldest)


class BackgroundSweeper:
    """Runs `SQLiteSweeper` in a daemon thread until stopped: a round when records are due
    (see the module doc), at most `interval_s` apart."""

    def __init__(
        self,
        sweeper: SQLiteSweeper,
        clock: Callable[[], float] = time.time,
        interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        min_interval_s: float = MIN_INTERVAL_S,
    ):
        self.sweeper = sweeper
        self.clock = clock
        self.interval_s = interval_s
        self.min_interval_s = min(min_interval_s, interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> SweepResult:
        result = sweep_until_done(self.sweeper, self.clock(), pause_s=BATCH_PAUSE_S, wait=self._stop.wait)
        if result.total:
            event_log(logging.DEBUG, "removed expired records", **result.removed)
        return result

    def next_wait(self) -> float:
        """Seconds until the next round: when the next record is due, within bounds."""
        due = self.sweeper.next_removal()
        if due is None:
            return self.interval_s
        return min(self.interval_s, max(self.min_interval_s, due - self.clock()))

    def _loop(self) -> None:
        wait_s = self.min_interval_s
        while not self._stop.wait(wait_s):
            try:
                self.run_once()
                wait_s = self.next_wait()
            except StoreError as exc:  # the next round tries again
                event_log(logging.WARNING, "cleanup of expired records failed", error=str(exc))
                wait_s = self.interval_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dtconnector-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
