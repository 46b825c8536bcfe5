"""The worker's journal of finished handlers (`local_receiver.progress`): a handler that
finished is never run again, even when the worker process dies before the batch's commit
put it in the ledger; and the journal never grows past one batch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from core.config import Settings
from local_receiver.app import LocalWorker
from local_receiver.progress import JournaledLedger, ProgressJournal
from local_receiver.sqlite_store import Database, SQLiteQueue
from tests.dt import BASE_ENV, event_body, event_id_of

ROOT = Path(__file__).resolve().parents[2]

# Two handlers on one event: `kept` appends a line and returns; `dies` kills the process
# (os._exit: no cleanup, no closing commit) unless the file `fixed` exists.
HANDLERS = textwrap.dedent("""
    import os
    from core import on

    HERE = os.path.dirname(os.path.abspath(__file__))

    @on("temperature")
    def kept(event):
        with open(os.path.join(HERE, "kept.log"), "a") as f:
            f.write(event.event_id + "\\n")

    @on("temperature")
    def dies(event):
        if not os.path.exists(os.path.join(HERE, "fixed")):
            os._exit(137)
""")

WORKER = textwrap.dedent("""
    import sys
    from core.config import Settings
    from local_receiver.app import LocalWorker

    worker = LocalWorker(sys.argv[1], Settings.from_env({"DT_HANDLERS": "crash_handlers"}), retry_base_s=0.0)
    worker.take_ownership()
    worker.runner.drain()
    worker.stop()
""")


def _run_worker(tmp_path: Path, db: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", WORKER, str(db)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_handler_finished_before_the_worker_died_is_not_run_again(tmp_path):
    (tmp_path / "crash_handlers.py").write_text(HANDLERS)
    db_path = tmp_path / "e.db"
    body = event_body(event_type="temperature")
    db = Database(db_path)
    SQLiteQueue(db).enqueue(body.decode(), event_id=event_id_of(body))
    db.close()

    died = _run_worker(tmp_path, db_path)
    assert died.returncode == 137, died.stderr
    assert (tmp_path / "kept.log").read_text().splitlines() == [event_id_of(body)]
    # The ledger row never got the completion (no commit happened after it); the journal has it.
    assert Path(str(db_path) + ".progress").read_bytes().count(b"\n") == 1

    (tmp_path / "fixed").touch()
    done = _run_worker(tmp_path, db_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "kept.log").read_text().splitlines() == [event_id_of(body)]  # not run again
    assert Path(str(db_path) + ".progress").read_bytes() == b""
    check = Database(db_path)
    try:
        assert check.query("SELECT count(*) FROM queue")[0][0] == 0
        [(status, names)] = check.query("SELECT status, done FROM claims WHERE key LIKE 'w%'")
        assert status == "COMPLETED" and "kept" in names and "dies" in names
    finally:
        check.close()


def test_a_torn_last_line_is_skipped_and_the_rest_replayed(tmp_path):
    """A crash in the middle of a write leaves a partial last line: it stands for the one
    handler whose completion was not yet recorded (the stated window), the rest count."""
    db = Database(tmp_path / "e.db")
    try:
        journal = ProgressJournal(str(tmp_path / "e.db.progress"))
        ledger = JournaledLedger(db, journal)
        from core.ports import IN_PROGRESS, Claim

        for key in ("w_a", "w_b"):
            assert ledger.create(key, Claim(IN_PROGRESS, 10**10, "v1"))
        db.flush()
        journal.append("w_a", ("h1",))
        journal.append("w_b", ("h1",))
        journal.close()
        with open(tmp_path / "e.db.progress", "ab") as f:
            f.write(b'{"k":"w_a","d":["h1","h')  # torn
        restarted = JournaledLedger(db, ProgressJournal(str(tmp_path / "e.db.progress")))
        assert restarted.replay() == 2
        assert restarted.get("w_a").done == ("h1",) and restarted.get("w_b").done == ("h1",)
        assert (tmp_path / "e.db.progress").read_bytes() == b""
        restarted.journal.close()
    finally:
        db.close()


def test_a_journaled_write_still_compares_versions(tmp_path):
    """The store's compare-and-set holds for journaled writes too: a stale version is refused."""
    from core.ports import IN_PROGRESS, Claim

    worker = LocalWorker(tmp_path / "e.db", Settings.from_env(BASE_ENV))
    try:
        ledger = worker.claims
        assert isinstance(ledger, JournaledLedger)
        assert ledger.create("w_x", Claim(IN_PROGRESS, 10**10, "v1"))
        assert not ledger.replace("w_x", "stale", Claim(IN_PROGRESS, 10**10, "v2", ("h",)))
        assert ledger.replace("w_x", "v1", Claim(IN_PROGRESS, 10**10, "v2", ("h",)))
        assert not ledger.replace("w_x", "v1", Claim(IN_PROGRESS, 10**10, "v3", ("h", "i")))
        assert ledger.get("w_x").version == "v2"
        worker.db.flush()
        ledger.fold()  # outside a batch: written and committed at once
        assert worker.db.query("SELECT version, done FROM claims WHERE key = 'w_x'") == [("v2", '["h"]')]
    finally:
        worker.stop()
