"""Group commit on the ingest path and batches in the worker, on a real SQLite file: how
many commits, and that an answer never comes before the commit holding its event."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from core.config import Settings
from core.http import Headers, Request
from core.receiver import Admitted, log_accepted, store_unavailable
from local_receiver.app import GroupCommit, LocalApp
from tests.dt import BASE_ENV, event_body, event_id_of, signed


def _commits(db) -> list[str]:
    """Record the COMMITs the database's connection runs from now on."""
    seen: list[str] = []
    db._conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


@pytest.fixture
def app(tmp_path):
    app = LocalApp(tmp_path / "e.db", Settings.from_env(BASE_ENV), retry_base_s=0.0)
    yield app
    app.stop()


def _admitted(app, count: int, **kwargs) -> list[Admitted]:
    bodies = [event_body(device=f"dev-{i}", **kwargs) for i in range(count)]
    return [app.receiver.admit(Request("POST", b, Headers(signed(b)))) for b in bodies]


def test_concurrent_events_share_one_commit_and_each_answer_follows_it(app):
    admitted = _admitted(app, 40)
    outside = sqlite3.connect(app.db.path)  # another process's view: committed rows only
    stored_when_answered: list[bool] = []
    group = GroupCommit(app.db, app.receiver.accept_batch, store_unavailable)
    commits = _commits(app.db)

    async def deliver_all():
        async def one(event):
            response = await group.accept(event)
            row = outside.execute("SELECT count(*) FROM queue WHERE event_id = ?", (event.event_id,)).fetchone()
            stored_when_answered.append(row[0] == 1)
            return response.status

        return await asyncio.gather(*(one(e) for e in admitted))

    try:
        statuses = asyncio.run(deliver_all())
    finally:
        group.stop()
        outside.close()
    assert statuses == [202] * 40
    assert all(stored_when_answered)
    assert 1 <= len(commits) < 10, len(commits)  # 40 events, a few batches (usually one or two)


def test_the_events_of_one_loop_turn_reach_the_writer_together_one_commit(app):
    """40 requests admitted in one turn of the loop are one batch, even though the writer
    thread is free to run between any two of them (each request here releases the GIL
    for a millisecond before it is accepted): the writer is handed the turn's events at
    its end, not woken by the first."""
    import time

    admitted = _admitted(app, 40)
    group = GroupCommit(app.db, app.receiver.accept_batch, store_unavailable)
    commits = _commits(app.db)

    async def deliver_all():
        async def one(event):
            time.sleep(0.001)  # blocking on purpose: the rest of the turn waits, the writer could run
            return await group.accept(event)

        return await asyncio.gather(*(one(e) for e in admitted))

    try:
        responses = asyncio.run(deliver_all())
    finally:
        group.stop()
    assert [r.status for r in responses] == [202] * 40
    assert len(commits) == 1, len(commits)


def test_a_failed_commit_answers_every_event_of_the_batch_503(app, monkeypatch):
    from core.ports import StoreError

    admitted = _admitted(app, 5)

    def failing_commit():
        raise StoreError("disk I/O error")

    group = GroupCommit(app.db, app.receiver.accept_batch, store_unavailable)
    monkeypatch.setattr(app.db, "_commit", failing_commit)

    async def deliver_all():
        return await asyncio.gather(*(group.accept(e) for e in admitted))

    try:
        responses = asyncio.run(deliver_all())
    finally:
        monkeypatch.undo()
        group.stop()
    assert {r.status for r in responses} == {503}
    assert {r.headers.get("Retry-After") for r in responses} == {"5"}


def test_one_batch_on_its_own_costs_two_commits_for_events_without_handlers(app):
    for body in (event_body(device=f"dev-{i}", event_type="touch") for i in range(50)):
        app.queue.enqueue(body.decode(), event_id=event_id_of(body))
    runner = app.runner  # no DT_HANDLERS: every event is stored (device state), no handler
    commits = _commits(app.db)
    assert runner.run_batch() == 50
    assert len(commits) == 2  # step 1 (reserve, ledger, state) and step 3 (complete, ack)
    assert app.queue.depth() == 0
    assert len(app.state.all()) == 50


def test_running_for_good_the_worker_commits_once_per_batch(app):
    """`run_forever`: a batch's step 3 (complete, ack) and the next batch's step 1 (reserve,
    ledger, state) share one commit. 3 batches of 50: 4 commits (the last closes the third
    batch and finds nothing) and the counters' once idle; two commits a batch made 8."""
    import threading

    for body in (event_body(device=f"dev-{i}", event_type="touch") for i in range(150)):
        app.queue.enqueue(body.decode(), event_id=event_id_of(body))
    runner = app.runner
    runner.batch_size, runner.gather_s = 50, 0.0
    commits = _commits(app.db)
    stop = threading.Event()

    def idle(seconds: float) -> None:  # nothing visible: stop instead of waiting
        stop.set()

    runner.run_forever(stop, wait=idle)
    assert app.queue.depth() == 0
    assert len(app.state.all()) == 150
    assert len(commits) == 4 + 1, commits  # and once idle, the counters (`on_idle`)


def test_the_worker_reads_and_parses_a_batch_before_it_takes_the_write_lock(app, monkeypatch):
    """The web process's ingest commits wait while the worker holds the file's one write
    lock, so the worker parses its next batch (and builds the device states) before taking
    it: while `prepare_batch` runs, another connection can begin a write at once. The
    batches of `run_forever` (whose closing commit precedes the next peek) and of
    `run_batch` alike."""
    import threading

    for body in (event_body(device=f"dev-{i}", event_type="touch") for i in range(30)):
        app.queue.enqueue(body.decode(), event_id=event_id_of(body))
    worker, runner = app.worker, app.runner
    runner.batch_size, runner.gather_s = 10, 0.0
    prepare = worker.prepare_batch
    writable: list[bool] = []

    def prepare_watching_the_lock(messages):
        other = sqlite3.connect(app.db.path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            writable.append(True)
        except sqlite3.OperationalError:  # database is locked
            writable.append(False)
        finally:
            other.close()
        return prepare(messages)

    monkeypatch.setattr(worker, "prepare_batch", prepare_watching_the_lock)
    assert runner.run_batch() == 10
    stop = threading.Event()
    runner.run_forever(stop, wait=lambda seconds: stop.set())
    assert app.queue.depth() == 0 and len(app.state.all()) == 30
    assert len(writable) >= 4 and all(writable), writable


def test_the_worker_records_each_finished_handler_before_the_next_runs_in_two_commits(app):
    """A finished handler is journaled (one line in ``<db>.progress``) before the next
    handler starts, not committed: a batch of 5 events costs 2 commits (step 1, step 3),
    and the journal is emptied once step 3 has put every completion in the ledger."""
    from pathlib import Path

    from core.handlers import registry

    journal = Path(app.db.path + ".progress")
    journaled_at_call: list[int] = []

    @registry.on("touch")
    def note(event):  # how many completions were journaled when this handler started
        journaled_at_call.append(len(journal.read_bytes().splitlines()) if journal.exists() else 0)

    for body in (event_body(device=f"dev-{i}", event_type="touch") for i in range(5)):
        app.queue.enqueue(body.decode(), event_id=event_id_of(body))
    runner = app.runner
    commits = _commits(app.db)
    assert runner.run_batch() == 5
    assert journaled_at_call == [0, 1, 2, 3, 4]
    assert len(commits) == 2
    assert journal.read_bytes() == b""
    done = app.db.query("SELECT status, done FROM claims WHERE key LIKE 'w\\_%' ESCAPE '\\'")
    assert len(done) == 5 and all(status == "COMPLETED" and "note" in names for status, names in done)


def test_the_worker_process_is_woken_only_once_the_events_are_committed(app):
    """A wake-up sent before the commit would find nothing to do, and the worker would
    then sleep until its next look (up to a second) with the events waiting."""
    outside = sqlite3.connect(app.db.path, check_same_thread=False)  # read from the writer thread
    visible_at_wake: list[int] = []
    app.queue.wake = lambda: visible_at_wake.append(outside.execute("SELECT count(*) FROM queue").fetchone()[0])
    try:
        futures = [app.group.submit(a) for a in _admitted(app, 5)]
        assert [f.result(10).status for f in futures] == [202] * 5
    finally:
        outside.close()
    assert visible_at_wake and min(visible_at_wake) >= 1, visible_at_wake



class _Counting:
    """The database's connection, counting the statements run through it (a trace
    callback would see a statement again each time one of its triggers fires)."""

    def __init__(self, real: sqlite3.Connection):
        self._real = real
        self.statements: list[str] = []

    def execute(self, sql: str, params=()):
        self.statements.append(sql.split(None, 1)[0].upper())
        return self._real.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _accepted_lines(records) -> list[dict]:
    return [r.fields for r in records if r.getMessage() == "accepted"]


def test_a_group_of_new_events_is_claimed_and_queued_in_two_statements_and_logged_in_one_line(app, request):
    import logging

    from tests.logcapture import dtconnector_log

    logger = logging.getLogger("dtconnector")
    level = logger.level
    logger.setLevel(logging.INFO)
    request.addfinalizer(lambda: logger.setLevel(level))
    admitted = _admitted(app, 30)
    counting = app.db._conn = _Counting(app.db._conn)
    try:
        with dtconnector_log() as records, app.db.batch():
            answers = app.receiver.accept_batch(admitted)
    finally:
        app.db._conn = counting._real
    assert [a.status for a in answers] == [202] * 30
    # every claim in one statement, every message in another
    writes = [verb for verb in counting.statements if verb != "SELECT"]  # the /healthz counts' reads
    assert writes == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    assert app.queue.depth() == 30
    assert _accepted_lines(records) == []  # nothing logged before the commit
    with dtconnector_log() as records:
        log_accepted(answers)
    (line,) = _accepted_lines(records)
    assert line == {"events": 30, "eventIds": [a.event_id for a in admitted]}


def test_a_repeated_or_known_event_id_in_a_group_is_a_duplicate_never_a_second_message(app):
    admitted = _admitted(app, 4)
    first = app.receiver.accept_batch(admitted[:1])
    again = app.receiver.accept_batch([admitted[1], admitted[0], admitted[2], admitted[1], admitted[3]])
    app.db.flush()
    assert [r.status for r in first] == [202]
    assert [r.status for r in again] == [202, 200, 202, 200, 202]
    assert app.queue.depth() == 4


def _answers_while_its_message_fails(app, admitted: list[Admitted], event_id: str, action: str, error: str) -> list:
    """Each event's answer from one group commit while a trigger makes storing `event_id`'s
    message fail with SQLite's ``RAISE(action, error)`` (the trigger is left in place:
    ``DROP TRIGGER fail_one``)."""
    app.db.write(
        "CREATE TEMP TRIGGER fail_one BEFORE INSERT ON queue WHEN NEW.event_id = '%s'"
        " BEGIN SELECT RAISE(%s, '%s'); END" % (event_id, action, error)
    )
    group = GroupCommit(app.db, app.receiver.accept_batch, store_unavailable)
    try:
        return [f.result(10) for f in [group.submit(a) for a in admitted]]
    finally:
        group.stop()


def test_one_failing_event_in_a_group_fails_alone_and_leaves_no_claim_without_its_message(app):
    """The group's single write fails as a whole (a real SQLite error, raised by a trigger
    for one event's message); then each event is stored alone: the others are answered
    202 and queued, the failing one 503 with no claim left behind, so DT's retry of it is
    accepted (a claim without its message would answer that retry "duplicate": lost)."""
    admitted = _admitted(app, 6)
    bad = admitted[3].event_id
    answers = _answers_while_its_message_fails(app, admitted, bad, "ABORT", "disk I/O error")
    assert [a.status for a in answers] == [202, 202, 202, 503, 202, 202]
    assert answers[3].headers.get("Retry-After") == "5"
    queued = {row[0] for row in app.db.query("SELECT event_id FROM queue")}
    assert queued == {a.event_id for a in admitted} - {bad}
    claimed = {row[0] for row in app.db.query("SELECT key FROM claims")}
    assert len(claimed) == 5 and not any(bad in key for key in claimed)

    app.db.write("DROP TRIGGER fail_one")
    assert app.receiver.accept_batch([admitted[3], admitted[0]])[0].status == 202  # DT's retry


def test_an_error_that_rolls_back_the_whole_transaction_never_leaves_a_202_uncommitted(app):
    """Some SQLite errors (a full disk, an I/O error) roll back the whole transaction, not
    only the statement. Here a trigger does that for one event's message, so the group's
    write and then that event's own attempt each undo everything written before them in
    the batch. Every event answered 202 must be committed (outside connection's view), and
    the others are answered 503 so DT retries them."""
    admitted = _admitted(app, 6)
    answers = _answers_while_its_message_fails(app, admitted, admitted[3].event_id, "ROLLBACK", "database or disk is full")
    outside = sqlite3.connect(app.db.path)
    try:
        committed = {row[0] for row in outside.execute("SELECT event_id FROM queue")}
    finally:
        outside.close()
    accepted = {a.event_id for a, answer in zip(admitted, answers) if answer.status == 202}
    assert accepted <= committed, sorted(accepted - committed)
    assert all(answer.status in (202, 503) for answer in answers)
    assert answers[3].status == 503
    app.db.write("DROP TRIGGER fail_one")
    retried = app.receiver.accept_batch([a for a, answer in zip(admitted, answers) if answer.status == 503])
    assert all(r.status in (200, 202) for r in retried)  # DT's retries: each one stored now
    assert {row[0] for row in app.db.query("SELECT event_id FROM queue")} == {a.event_id for a in admitted}


def _enqueue(app, bodies) -> list[str]:
    for body in bodies:
        app.queue.enqueue(body.decode(), event_id=event_id_of(body))
    return [event_id_of(b) for b in bodies]


def test_the_worker_writes_a_batch_of_new_events_in_one_statement_per_table_and_logs_one_line(app, request):
    """Step 1: the ledger claims in one INSERT and the device states in one; step 3: the
    completions in one UPDATE and the acknowledgements in one DELETE. One "processed" line
    names every event of the batch."""
    import logging

    from tests.logcapture import dtconnector_log

    logger = logging.getLogger("dtconnector")
    level = logger.level
    logger.setLevel(logging.INFO)
    request.addfinalizer(lambda: logger.setLevel(level))
    ids = _enqueue(app, [event_body(device=f"dev-{i}", event_type="touch") for i in range(20)])
    runner = app.runner
    counting = app.db._conn = _Counting(app.db._conn)
    try:
        with dtconnector_log() as records:
            assert runner.run_batch() == 20
    finally:
        app.db._conn = counting._real
    writes = [verb for verb in counting.statements if verb not in ("SELECT", "SAVEPOINT", "RELEASE")]
    assert writes == ["BEGIN", "UPDATE", "INSERT", "INSERT", "COMMIT",  # reserve, ledger, state
                      "BEGIN", "UPDATE", "DELETE", "INSERT", "COMMIT"], writes  # ledger, ack, metrics
    assert app.queue.depth() == 0 and len(app.state.all()) == 20
    done = app.db.query("SELECT count(*) FROM claims WHERE key LIKE 'w\\_%' ESCAPE '\\' AND status = 'COMPLETED'")
    assert done == [(20,)]
    processed = [r.fields for r in records if r.getMessage() == "processed"]
    assert processed == [{"events": 20, "eventIds": ids}]


def test_an_older_event_after_a_newer_one_in_a_batch_is_counted_stale_and_keeps_the_newer_state(app):
    from core.metrics import STALE_STATE_SKIPPED

    newer = event_body(device="dev-a", event_type="touch", timestamp="2026-11-22T10:00:05.000000Z")
    older = event_body(device="dev-a", event_type="touch", timestamp="2026-11-22T10:00:01.000000Z")
    other = event_body(device="dev-b", event_type="touch")
    _enqueue(app, [newer, older, other])
    assert app.runner.run_batch() == 3
    [state_a] = app.state.get_device("dev-a")
    assert state_a.event_id == event_id_of(newer)
    counters = app.local_worker.metrics.snapshot()[0]
    assert counters.get((STALE_STATE_SKIPPED, ())) == 1
    assert app.queue.depth() == 0  # the stale one's handlers ran all the same


def test_one_event_whose_state_cannot_be_written_fails_alone_in_its_batch(app):
    """A real SQLite error for one event's device state fails the batch's one statement;
    each event's state is then written alone: the others are processed and acknowledged,
    the failing one is rescheduled, its ledger claim released for the redelivery."""
    bodies = [event_body(device=f"dev-{i}", event_type="touch") for i in range(5)]
    ids = _enqueue(app, bodies)
    app.db.write("CREATE TEMP TRIGGER fail_one BEFORE INSERT ON device_state WHEN NEW.device_id = 'dev-2'"
                 " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    assert app.runner.run_batch() == 5
    left = app.db.query("SELECT event_id, attempts, last_error FROM queue")
    assert [(event_id, attempts) for event_id, attempts, _ in left] == [(ids[2], 1)]
    assert "disk I/O error" in left[0][2]
    assert sorted(s.device_id for s in app.state.all()) == ["dev-0", "dev-1", "dev-3", "dev-4"]
    [(status, expires_at)] = app.db.query("SELECT status, expires_at FROM claims WHERE key = ?", ("w_" + ids[2],))
    assert status == "IN_PROGRESS" and expires_at <= app.db.clock()  # released: a redelivery takes over at once

    app.db.write("DROP TRIGGER fail_one")
    app.db.write("UPDATE queue SET visible_at = 0")
    assert app.runner.run_batch() == 1 and app.queue.depth() == 0
    assert len(app.state.all()) == 5
