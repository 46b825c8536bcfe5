"""`dtconnector stream`: DT's stream (the stand-in's) into the local receiver's own pipeline."""

from __future__ import annotations

import sys
import textwrap
import threading
from collections import Counter
from datetime import datetime, timezone

import pytest

from core.handlers import registry
from dtcloud.client import Client
from emulator.dtapi import Device
from dtcloud.stream import Follower, local_pipeline
from local_receiver.cli import main
from tests.dtcloud.conftest import PROJECT, temperature, wait_until


@pytest.fixture
def pipeline(dt_env, standin, tmp_path, monkeypatch):
    """The local app on a fresh SQLite file, with a handler recording each event id."""
    registry.clear()
    sys.modules.pop("stream_record", None)  # re-import: its @on must register again
    seen = tmp_path / "seen.txt"
    (tmp_path / "stream_record.py").write_text(textwrap.dedent(f"""
        from core import on
        @on("*")
        def record(event):
            with open({str(seen)!r}, "a") as f:
                f.write(event.event_id + "\\n")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DT_HANDLERS", "stream_record")
    monkeypatch.setenv("DT_RETRY_DELAY_S", "0")
    for i in range(2):
        standin.add_device(PROJECT, Device(f"dev{i:02d}", labels={"room": "a"}))
    app, deliver = local_pipeline(str(tmp_path / "events.db"))
    yield app, deliver, lambda: seen.read_text().split() if seen.exists() else []
    app.stop()
    registry.clear()


def publish(standin, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        e = temperature(standin, f"dev{i % 2:02d}", float(i), datetime.now(timezone.utc))
        standin.publish(PROJECT, e, deliver=False)
        ids.append(e["eventId"])
    return ids


def follow(follower: Follower):
    stop = threading.Event()
    errors = []

    def target():
        try:
            follower.run(stop)
        except Exception as exc:  # surfaced by the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return stop, t, errors


def test_forced_disconnect_loses_nothing(pipeline, standin, capsys):
    app, deliver, seen = pipeline
    follower = Follower(Client(), PROJECT, deliver, ping_interval_s=1.0)
    stop, thread, errors = follow(follower)
    try:
        assert follower.connected.wait(10)
        live = publish(standin, 5)
        wait_until(lambda: len(seen()) == 5, what="5 streamed events handled")

        standin.refuse_streams = True  # the reconnect fails for a while
        standin.drop_streams()
        wait_until(lambda: not follower.connected.is_set(), what="the disconnect")
        during = publish(standin, 6, start=5)  # only in history now
        standin.refuse_streams = False
        wait_until(lambda: follower.connected.is_set(), timeout=15, what="the reconnect")
        after = publish(standin, 4, start=11)
        wait_until(lambda: set(live + during + after) <= set(seen()), timeout=15, what="all 15 handled")
    finally:
        stop.set()
        standin.drop_streams()
        thread.join(10)
    assert not errors
    assert all(n == 1 for n in Counter(seen()).values())  # the gap overlap was absorbed by dedup
    assert follower.stats.reconnects >= 1 and follower.stats.backfilled >= len(during)
    latest = {s.device_id: s for s in app.state.all() if s.event_type == "temperature"}
    assert latest["dev00"].data["temperature"]["value"] == 14.0  # the newest event per device
    assert "reconnected; backfilled" in capsys.readouterr().err


def test_silent_connection_triggers_reconnect(pipeline, standin):
    app, deliver, seen = pipeline
    follower = Follower(Client(), PROJECT, deliver, ping_interval_s=0.5)
    stop, thread, errors = follow(follower)
    try:
        assert follower.connected.wait(10)
        publish(standin, 1)
        wait_until(lambda: len(seen()) == 1, what="first event")
        standin.silent = True  # no pings: after 2 x 0.5 s the follower must give up on the connection
        wait_until(lambda: follower.stats.reconnects >= 1, timeout=10, what="a reconnect on silence")
        standin.silent = False
        wait_until(lambda: follower.connected.is_set(), timeout=10, what="the new connection")
        ids = publish(standin, 2, start=1)
        wait_until(lambda: set(ids) <= set(seen()), timeout=10, what="events after the reconnect")
    finally:
        stop.set()
        standin.drop_streams()
        thread.join(10)
    assert not errors


def test_stream_with_bad_credentials_exits_2(dt_env, standin, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DT_SERVICE_ACCOUNT_SECRET", "wrong")
    code = main(["stream", "--db", str(tmp_path / "s.db")])
    err = capsys.readouterr().err
    assert code == 2 and "credentials" in err and "Traceback" not in err


def test_stream_unknown_project_exits_2(dt_env, standin, capsys, tmp_path):
    code = main(["stream", "--project", "ghost", "--db", str(tmp_path / "s.db")])
    err = capsys.readouterr().err
    assert code == 2 and "project ghost" in err


def test_events_late_to_history_are_fetched_by_the_recheck(pipeline, standin):
    app, deliver, seen = pipeline
    standin.history_delay_s = 4.0  # like DT's up-to-10-s lag, shortened
    follower = Follower(Client(), PROJECT, deliver, ping_interval_s=0.5, history_lag_s=5)
    stop, thread, errors = follow(follower)
    try:
        assert follower.connected.wait(10)
        standin.drop_streams()
        wait_until(lambda: not follower.connected.is_set(), what="the disconnect")
        late = publish(standin, 3)  # during the reconnect: history only, and 4 s late there
        wait_until(lambda: follower.connected.is_set(), timeout=10, what="the reconnect")
        assert not set(late) & set(seen())  # the gap fetch at the reconnect could not see them yet
        wait_until(lambda: set(late) <= set(seen()), timeout=15, what="the late events, via the re-check")
    finally:
        stop.set()
        standin.drop_streams()
        thread.join(10)
    assert not errors and all(n == 1 for n in Counter(seen()).values())
