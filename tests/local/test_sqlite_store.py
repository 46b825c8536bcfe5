"""What the SQLite ports commit, and when: read back through a second connection, which
sees only committed data, i.e. what survives the receiver being killed."""

from __future__ import annotations

import sqlite3

import pytest

from core.config import Secret, Settings
from core.http import Headers, Request
from core.keys import store_key
from core.ports import COMPLETED, IN_PROGRESS, AtomicOutbox, Claim
from core.receiver import Receiver
from local_receiver.sqlite_store import Database, SQLiteClaimStore, SQLiteQueue
from tests.dt import SECRET, event_body, event_id_of, signed


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "events.db", flush_delay_s=60)  # the flusher never gets there
    yield database
    database.close()


def committed(db: Database, sql: str, params: tuple = ()) -> list[tuple]:
    other = sqlite3.connect(db.path)
    try:
        return other.execute(sql, params).fetchall()
    finally:
        other.close()


def test_a_new_event_is_claimed_and_queued_in_one_commit(db):
    queue = SQLiteQueue(db)
    assert isinstance(queue, AtomicOutbox)
    receiver = Receiver(Settings(secrets=(Secret(SECRET),)), SQLiteClaimStore(db, commit="never"), queue)
    body = event_body()
    response = receiver.handle(Request("POST", body, Headers(signed(body))))
    assert response.status == 202
    key = store_key(event_id_of(body))
    # Committed before the 202: the claim, already COMPLETED, and the message together.
    assert committed(db, "SELECT status FROM claims WHERE key = ?", (key,)) == [(COMPLETED,)]
    assert committed(db, "SELECT event_id FROM queue") == [(event_id_of(body),)]


def test_claim_and_enqueue_of_a_known_event_writes_nothing(db):
    queue = SQLiteQueue(db)
    claim = Claim(COMPLETED, 2e9, "v1")
    assert queue.claim_and_enqueue("k1", claim, "{}", event_id="k1") is True
    assert queue.claim_and_enqueue("k1", Claim(COMPLETED, 2e9, "v2"), "{}", event_id="k1") is False
    assert queue.depth() == 1
    assert committed(db, "SELECT version FROM claims") == [("v1",)]


@pytest.mark.parametrize(
    "commit, claim, durable",
    [
        ("always", Claim(IN_PROGRESS, 2e9, "v"), True),
        ("never", Claim(IN_PROGRESS, 2e9, "v", ("h",)), False),
        ("progress", Claim(IN_PROGRESS, 2e9, "v"), False),  # a fresh lease: cheap to lose
        ("progress", Claim(COMPLETED, 2e9, "v", ("h",)), False),  # progress is already on disk
        ("progress", Claim(IN_PROGRESS, 2e9, "v", ("h",)), True),  # a finished handler: must survive
    ],
)
def test_which_claim_writes_are_committed_before_they_return(db, commit, claim, durable):
    store = SQLiteClaimStore(db, commit=commit)
    assert store.create("k", claim)
    assert bool(committed(db, "SELECT 1 FROM claims")) is durable


def test_recording_a_finished_handler_commits_what_came_before(db):
    store = SQLiteClaimStore(db, commit="progress")
    assert store.create("w_k", Claim(IN_PROGRESS, 2e9, "v1"))
    assert committed(db, "SELECT 1 FROM claims") == []
    assert store.replace("w_k", "v1", Claim(IN_PROGRESS, 2e9, "v2", ("handler",)))
    assert committed(db, "SELECT version, done FROM claims") == [("v2", '["handler"]')]


def test_an_unknown_commit_policy_is_refused(db):
    with pytest.raises(ValueError, match="always, never or progress"):
        SQLiteClaimStore(db, commit="sometimes")


def test_reserve_takes_the_oldest_visible_message_once(db):
    queue = SQLiteQueue(db)
    for n in range(3):
        queue.enqueue(f"body{n}", event_id=f"e{n}")
    first = queue.reserve(lease_s=60)
    second = queue.reserve(lease_s=60)
    assert (first.event_id, first.body, first.attempts) == ("e0", "body0", 1)
    assert second.event_id == "e1"
    queue.retry_later(first, 0, "boom")  # visible again now, behind e2 (queued before now)
    assert queue.reserve(lease_s=60).event_id == "e2"
    again = queue.reserve(lease_s=60)
    assert (again.event_id, again.attempts) == ("e0", 2)
    assert queue.reserve(lease_s=60) is None


def test_peeking_reserves_nothing_and_only_what_is_still_visible_is_reserved_after(db):
    """`peek_batch` reads (no write lock); `reserve_peeked` then takes what is still
    visible, with its attempts as counted at that moment."""
    queue = SQLiteQueue(db)
    for n in range(4):
        queue.enqueue(f"body{n}", event_id=f"e{n}")
    peeked = queue.peek_batch(3)
    assert [(m.event_id, m.body, m.attempts) for m in peeked] == [("e0", "body0", 1), ("e1", "body1", 1), ("e2", "body2", 1)]
    assert queue.peek_batch(3) == peeked  # a read changes nothing
    taken_meanwhile = queue.reserve(lease_s=60)  # e0
    queue.retry_later(queue.reserve(lease_s=60), 0, "boom")  # e1: visible again, attempted once
    reserved = queue.reserve_peeked(peeked, lease_s=60)
    assert taken_meanwhile.event_id == "e0"
    assert [(m.event_id, m.attempts) for m in reserved] == [("e1", 2), ("e2", 1)]
    assert [m.event_id for m in queue.peek_batch(10)] == ["e3"]


class _WriteDuringCheckpoint:
    """The flusher's checkpoint connection, with a transaction of the receiver's open when
    the first (unlocked) checkpoint starts and committed after it, as under steady load."""

    def __init__(self, conn: sqlite3.Connection, db: Database):
        self.conn, self.db, self.calls = conn, db, 0

    def execute(self, sql: str):
        self.calls += 1
        if self.calls > 1:
            return self.conn.execute(sql)
        self.db.write("INSERT INTO queue (event_id, body, visible_at) VALUES ('late', '{}', 0)", durable=False)
        result = self.conn.execute(sql)
        self.db.flush()
        return result


def wal_frames(path: str) -> int:
    other = sqlite3.connect(path)
    try:
        return other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        other.close()


def test_the_wal_starts_over_after_a_checkpoint_even_under_steady_writes(db):
    db.wal_restart_bytes = 0  # past the size at which the checkpointer starts the WAL over
    for n in range(200):
        db.write("INSERT INTO queue (event_id, body, visible_at) VALUES (?, ?, 0)", (f"e{n}", "x" * 500))
    ckpt = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    try:
        db._checkpoint(_WriteDuringCheckpoint(ckpt, db))
    finally:
        ckpt.close()
    db.write("INSERT INTO queue (event_id, body, visible_at) VALUES ('next', '{}', 0)")
    # Without the locked second pass, frames committed during the checkpoint stay
    # uncopied, the WAL never starts over, and it grows by every commit, forever.
    assert wal_frames(db.path) < 10


def test_many_claims_are_written_all_or_none_across_statements(tmp_path):
    """Past `_ROWS_PER_STATEMENT` rows a group write takes several statements; a failure in
    a later one leaves none of the earlier rows (the batch then goes one by one)."""
    from core.ports import StoreError
    from local_receiver.sqlite_store import _ROWS_PER_STATEMENT

    db = Database(tmp_path / "e.db")
    store = SQLiteClaimStore(db, commit="never")
    count = _ROWS_PER_STATEMENT + 10
    records = [(f"k{n}", Claim(IN_PROGRESS, 1e12, f"v{n}")) for n in range(count)]
    db.write("CREATE TEMP TRIGGER fail_last BEFORE INSERT ON claims WHEN NEW.key = 'k%d'"
             " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END" % (count - 1))
    try:
        with pytest.raises(StoreError), db.batch():
            store.create_many(records)
        assert db.query("SELECT count(*) FROM claims") == [(0,)]
        db.write("DROP TRIGGER fail_last")
        with db.batch():
            assert store.create_many(records + records[:1]) == [True] * count + [False]
        assert db.query("SELECT count(*) FROM claims") == [(count,)]
    finally:
        db.close()


def test_a_transaction_sqlite_rolls_back_fails_its_batch_and_gives_the_write_turn_back(tmp_path):
    """Some errors (a full disk, an I/O error; here a trigger's RAISE(ROLLBACK)) make SQLite
    roll back the whole transaction, not only the failing statement. The batch's earlier
    write is then gone: the batch must fail (nobody may answer it as stored), and the
    cross-process write turn must be free again, or the other process would wait forever."""
    import threading

    from core.ports import QueueError, StoreError

    db, other = Database(tmp_path / "e.db"), Database(tmp_path / "e.db")
    try:
        db.write("CREATE TEMP TRIGGER roll_back BEFORE INSERT ON queue WHEN NEW.event_id = 'bad'"
                 " BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END")
        queue = SQLiteQueue(db)
        with pytest.raises(StoreError, match="rolled the batch's transaction back"):
            with db.batch():
                queue.enqueue("first", event_id="good")  # inside a batch: committed at its end
                with pytest.raises(QueueError):
                    queue.enqueue("second", event_id="bad")
        assert other.query("SELECT count(*) FROM queue") == [(0,)]  # "good" went with the rollback

        wrote = threading.Event()
        threading.Thread(target=lambda: (SQLiteQueue(other).enqueue("x", event_id="later"), wrote.set()),
                         daemon=True).start()
        assert wrote.wait(5), "the other connection still waits for the write turn"
        with db.batch():  # the next batch of the same connection is not marked failed
            queue.enqueue("third", event_id="good-2")
        assert {r[0] for r in other.query("SELECT event_id FROM queue")} == {"later", "good-2"}
    finally:
        db.close()
        other.close()
