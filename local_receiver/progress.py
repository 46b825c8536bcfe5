"""The worker's ledger with an append-only journal of finished handlers.

Why: the ledger must remember a finished handler before the next handler runs, or a crash
runs it again. Recording it with a SQLite commit costs a turn on the write lock the web
process also needs, and a WAL write of whole pages: tens of microseconds, plus a wait for
the web process's batch, once per event. One line appended to a file costs one
``write(2)``. So a finished handler is journaled at once, the ledger row is updated by the
batch's closing commit (which writes every completion anyway), and the journal is then
emptied; a worker starting after a crash replays what is left before it takes any event.

The same durability as the commit it replaces (``synchronous=NORMAL``): the line is in the
operating system's page cache when the handler's successor starts, so it survives this
process being killed, not a power cut. The store keeps every `ClaimStore` promise,
compare-and-set included: a journaled write is checked against the stored (or journaled)
version first. It relies on being the only writer of the ledger's rows, which the worker
lock (`LocalWorker.take_ownership`) guarantees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.ports import IN_PROGRESS, Claim

from .sqlite_store import Database, SQLiteClaimStore


_JSON = json.JSONEncoder(separators=(",", ":")).encode  # what json.dumps does, without its per-call setup


class ProgressJournal:
    """``<db>.progress``: one JSON line per finished handler, ``{"k": key, "d": done}``."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.lines = 0  # written since the last `clear`

    def append(self, key: str, done: tuple[str, ...]) -> None:
        os.write(self._fd, ('{"k":' + _JSON(key) + ',"d":' + _JSON(list(done)) + "}\n").encode())
        self.lines += 1

    def clear(self) -> None:
        """Everything journaled is committed in the ledger: start over."""
        if self.lines:
            self.truncate()

    def truncate(self) -> None:
        """Empty the file whatever it holds (after a crash: a torn line too)."""
        os.ftruncate(self._fd, 0)
        self.lines = 0

    def read(self) -> dict[str, tuple[str, ...]]:
        """key -> the handlers journaled as done (a torn last line, from a crash mid-write,
        is skipped: its handler is the one whose completion was not yet recorded)."""
        done: dict[str, tuple[str, ...]] = {}
        for line in Path(self.path).read_bytes().splitlines():
            try:
                entry = json.loads(line)
                key, names = entry["k"], tuple(entry["d"])
            except (ValueError, KeyError, TypeError):
                continue
            done[key] = names
        return done

    def close(self) -> None:
        os.close(self._fd)


class JournaledLedger(SQLiteClaimStore):
    """`SQLiteClaimStore` for the worker's ledger: a write recording a finished handler
    (an IN_PROGRESS record whose `done` grew) goes to the journal and waits in memory; any
    later write of that row, or `fold` (the batch's closing commit), puts it in SQLite."""

    def __init__(self, db: Database, journal: ProgressJournal):
        super().__init__(db, commit="progress")
        self.journal = journal
        #: key -> (the version stored in SQLite, the record journaled since)
        self._pending: dict[str, tuple[str, Claim]] = {}
        #: key -> the version this store last wrote to SQLite (since the last `fold`): the
        #: compare-and-set of a journaled write needs no read for the rows of this batch.
        self._written: dict[str, str] = {}

    def create(self, key: str, claim: Claim) -> bool:
        created = super().create(key, claim)
        if created:
            self._written[key] = claim.version
        return created

    def create_many(self, records: list[tuple[str, Claim]]) -> list[bool]:
        created = super().create_many(records)
        for (key, claim), made in zip(records, created):
            if made:
                self._written[key] = claim.version
        return created

    def replace_many(self, items: list[tuple[str, str, Claim]]) -> list[bool]:
        """`replace` of many rows, none of them a finished handler's record (the batch's
        completions): the journaled record of a row is checked, then overwritten in SQLite."""
        if any(self._journals(claim) for _, _, claim in items):
            return [self.replace(key, expected, claim) for key, expected, claim in items]
        writes, refused = [], set()
        for key, expected, claim in items:
            pending = self._pending.get(key)
            if pending is not None:
                if pending[1].version != expected:
                    refused.add(key)
                    continue
                expected = pending[0]  # one UPDATE from the stored row to the final one
            writes.append((key, expected, claim))
        replaced = dict(zip((key for key, _, _ in writes), super().replace_many(writes))) if writes else {}
        for key, _, claim in writes:
            self._pending.pop(key, None)  # as `replace` does, written or not
            if replaced[key]:
                self._written[key] = claim.version
        return [key not in refused and replaced.get(key, False) for key, _, _ in items]

    def get(self, key: str) -> Claim | None:
        pending = self._pending.get(key)
        return pending[1] if pending is not None else super().get(key)

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        pending = self._pending.get(key)
        if pending is not None:
            stored, current = pending
            if current.version != expected_version:
                return False
            expected_version = stored  # one UPDATE from the stored row to the final one
        if self._journals(claim):
            if pending is None and self._written.get(key) != expected_version:
                row = super().get(key)  # a row this store did not write in this batch
                if row is None or row.version != expected_version:
                    return False
            self.journal.append(key, claim.done)
            self._pending[key] = (expected_version, claim)
            return True
        self._pending.pop(key, None)
        replaced = super().replace(key, expected_version, claim)
        if replaced:
            self._written[key] = claim.version
        return replaced

    def delete(self, key: str, expected_version: str) -> bool:
        pending = self._pending.pop(key, None)
        if pending is not None:
            if pending[1].version != expected_version:
                self._pending[key] = pending
                return False
            expected_version = pending[0]
        return super().delete(key, expected_version)

    def fold(self) -> None:
        """Write every journaled record into the current transaction, and empty the journal
        once that transaction is committed (call inside `Database.batch`)."""
        pending, self._pending = self._pending, {}
        self._written.clear()
        for key, (stored, claim) in pending.items():
            super().replace(key, stored, claim)
        self._db.after_commit(self.journal.clear)

    def replay(self) -> int:
        """After a crash: add the handlers the journal says finished to their ledger rows
        (rows still IN_PROGRESS; a completed row already has them), commit, empty it."""
        entries = self.journal.read()
        replayed = 0
        with self._db.batch():
            for key, names in entries.items():
                row = SQLiteClaimStore.get(self, key)
                if row is None or row.status != IN_PROGRESS:
                    continue
                done = row.done + tuple(n for n in names if n not in row.done)
                if done != row.done:
                    super().replace(key, row.version, Claim(row.status, row.expires_at, row.version, done))
                    replayed += 1
            self._db.after_commit(self.journal.truncate)  # a torn line goes too
        return replayed

    @staticmethod
    def _journals(claim: Claim) -> bool:
        """A finished handler's record (what the "progress" policy commits at once)."""
        return claim.status == IN_PROGRESS and bool(claim.done)
