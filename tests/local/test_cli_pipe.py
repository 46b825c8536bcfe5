"""`dtconnector state | head`: the reader closing the pipe early is not an error to report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.ports import DeviceState
from local_receiver.sqlite_store import Database, SQLiteStateStore

ROOT = Path(__file__).resolve().parents[2]


def test_state_piped_into_a_reader_that_stops_early_ends_without_a_traceback(tmp_path):
    db = Database(tmp_path / "events.db")
    store = SQLiteStateStore(db)
    for i in range(3000):  # far more JSON than a pipe buffer holds
        store.put_if_newer(DeviceState(f"dev-{i:05d}", "temperature", 1, f"e{i}", "2026-11-22T10:00:00Z",
                                       {"value": 21.5}, {"name": "sensor"}))
    db.close()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DT_")}, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dtconnector", "state", "--db", str(tmp_path / "events.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"{"  # like `head -1`
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(30)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
