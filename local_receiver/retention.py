"""Bounded storage for the SQLite file: core's `ExpiredRecordSweeper` and the store report.

SQLite has no TTL, so the receiver removes what `core.retention` says nobody needs
(expired claims and ledger entries, dead letters past their retention) in a background
thread: one short ``DELETE ... LIMIT`` statement per batch, each holding the database
lock only for that statement, with a pause between batches so ingest is never queued
behind the cleanup. Deleted pages are reused by later inserts, so the file stops growing
once it holds about one dedup window of events.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from core.logs import event_log
from core.ports import COMPLETED, StoreError
from core.retention import (
    DEFAULT_SWEEP_BATCH,
    UNFINISHED_GRACE_S,
    StoreReport,
    SweepResult,
    sweep_until_done,
)
from core.worker import WORKER_NAMESPACE

from .sqlite_store import Database

#: How often the receiver looks for expired records (seconds), at most.
DEFAULT_SWEEP_INTERVAL_S = 60.0
#: Pause between two batches of one sweep, so waiting ingest requests go first.
BATCH_PAUSE_S = 0.05


class SQLiteSweeper:
    """Removes expired claims and old dead letters; never queued messages or device state.

    Each DELETE re-checks the rule in its own WHERE clause, inside the statement that
    deletes, so a claim taken over or renewed since it was seen is never removed."""

    def __init__(self, db: Database, dead_letter_retention_s: float, grace_s: float = UNFINISHED_GRACE_S):
        self._db = db
        self.dead_letter_retention_s = dead_letter_retention_s
        self.grace_s = grace_s

    def sweep(self, now: float, limit: int = DEFAULT_SWEEP_BATCH) -> SweepResult:
        result = SweepResult()
        claims = self._db.write(
            "DELETE FROM claims WHERE key IN (SELECT key FROM claims WHERE expires_at <= ?"
            " AND (status = ? OR expires_at <= ?) LIMIT ?)",
            (now, COMPLETED, now - self.grace_s, limit),
            durable=False,
        )
        dead = self._db.write(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE dead_at <= ? LIMIT ?)",
            (now - self.dead_letter_retention_s, limit),
            durable=False,
        )
        result.add("claims", claims)
        result.add("dead_letters", dead)
        result.more = claims >= limit or dead >= limit
        return result


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
    """Runs `SQLiteSweeper` every `interval_s` in a daemon thread until stopped."""

    def __init__(self, sweeper: SQLiteSweeper, clock: Callable[[], float] = time.time, interval_s: float = DEFAULT_SWEEP_INTERVAL_S):
        self.sweeper = sweeper
        self.clock = clock
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> SweepResult:
        result = sweep_until_done(self.sweeper, self.clock(), pause_s=BATCH_PAUSE_S, wait=self._stop.wait)
        if result.total:
            event_log(logging.INFO, "removed expired records", **result.removed)
        return result

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except StoreError as exc:  # the next round tries again
                event_log(logging.WARNING, "cleanup of expired records failed", error=str(exc))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dtconnector-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
