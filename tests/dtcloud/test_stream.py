"""`dtconnector stream`: DT's stream (the stand-in's) into the local receiver's own pipeline."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from core.handlers import registry
from dtcloud.client import Client
from dtcloud.stream import Follower, local_pipeline
from emulator.dtapi import Device, endless_line, stream_lines
from dtconnector.cli import main
from tests.dtcloud.conftest import PROJECT, temperature
from tests.waiting import wait_until


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
    app, accept = local_pipeline(str(tmp_path / "events.db"))
    yield app, accept, lambda: seen.read_text().split() if seen.exists() else []
    app.stop()
    registry.clear()


def publish(standin, n: int, start: int = 0, ago_s: float = 0.0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        e = temperature(standin, f"dev{i % 2:02d}", float(i), datetime.now(timezone.utc) - timedelta(seconds=ago_s))
        standin.publish(PROJECT, e, deliver=False)
        ids.append(e["eventId"])
    return ids


@contextlib.contextmanager
def following(follower: Follower, standin):
    """`follower.run` in a thread for the block; yields the errors it raised (a list)."""
    stop = threading.Event()
    errors: list[Exception] = []

    def target():
        try:
            follower.run(stop)
        except Exception as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        standin.drop_streams()
        thread.join(10)


def test_forced_disconnect_loses_nothing(pipeline, standin, capsys):
    app, deliver, seen = pipeline
    follower = Follower(Client(), PROJECT, deliver, ping_interval_s=1.0)
    with following(follower, standin) as errors:
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
    assert not errors
    assert all(n == 1 for n in Counter(seen()).values())  # the gap overlap was absorbed by dedup
    assert follower.stats.reconnects >= 1 and follower.stats.backfilled >= len(during)
    latest = {s.device_id: s for s in app.state.all() if s.event_type == "temperature"}
    assert latest["dev00"].data["temperature"]["value"] == 14.0  # the newest event per device
    assert "reconnected; backfilled" in capsys.readouterr().err


def test_silent_connection_triggers_reconnect(pipeline, standin):
    app, deliver, seen = pipeline
    follower = Follower(Client(), PROJECT, deliver, ping_interval_s=0.5)
    with following(follower, standin) as errors:
        assert follower.connected.wait(10)
        publish(standin, 1)
        wait_until(lambda: len(seen()) == 1, what="first event")
        standin.silent = True  # no pings: after 2 x 0.5 s the follower must give up on the connection
        wait_until(lambda: follower.stats.reconnects >= 1, timeout=10, what="a reconnect on silence")
        standin.silent = False
        wait_until(lambda: follower.connected.is_set(), timeout=10, what="the new connection")
        ids = publish(standin, 2, start=1)
        wait_until(lambda: set(ids) <= set(seen()), timeout=10, what="events after the reconnect")
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


class Clock:
    """Monotonic time a test can move forward: the follower's re-check comes due at once."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_events_late_to_history_are_fetched_by_the_recheck(pipeline, standin):
    app, deliver, seen = pipeline
    clock = Clock()
    follower = Follower(Client(), PROJECT, deliver, ping_interval_s=0.5, history_lag_s=12, clock=clock)
    with following(follower, standin) as errors:
        assert follower.connected.wait(10)
        standin.hold_history = True  # what is published now reaches the history late, as on DT
        standin.drop_streams()
        wait_until(lambda: not follower.connected.is_set(), what="the disconnect")
        late = publish(standin, 3)  # during the reconnect: history only, and late there
        wait_until(lambda: follower.connected.is_set(), timeout=10, what="the reconnect")
        wait_until(lambda: follower.recheck is not None, what="the gap fetch")
        assert not set(late) & set(seen())  # the gap fetch at the reconnect could not see them yet
        standin.release_history()
        time.sleep(1)
        assert not set(late) & set(seen())  # the re-check is not due yet
        clock.offset = 12  # DT's lag has passed
        wait_until(lambda: set(late) <= set(seen()), timeout=10, what="the late events, via the re-check")
    assert not errors and all(n == 1 for n in Counter(seen()).values())


def test_a_store_failing_for_a_few_seconds_loses_nothing(pipeline, standin, tmp_path, monkeypatch):
    """The receiver's SQLite store really fails (another connection holds the write lock; the
    receiver's wait for it shortened from 10 s so it fails at once): each event is answered
    503 and tried again with backoff until the store works again, never dropped."""
    from local_receiver import sqlite_store

    monkeypatch.setattr(sqlite_store, "LOCK_WAIT_S", 0.02)
    app, accept, seen = pipeline
    follower = Follower(Client(), PROJECT, accept, ping_interval_s=1.0)
    blocker = sqlite3.connect(str(tmp_path / "events.db"), timeout=10, isolation_level=None)
    with contextlib.closing(blocker), following(follower, standin) as errors:
        assert follower.connected.wait(10)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            ids = publish(standin, 6)
            wait_until(lambda: follower.stats.store_retries >= 3, what="503s retried")
            assert not set(ids) & set(seen())
            time.sleep(2)  # the store stays down a few seconds
        finally:
            blocker.execute("COMMIT")
        wait_until(lambda: set(ids) <= set(seen()), timeout=30, what="all 6 stored and handled")
    assert not errors
    s = follower.stats
    assert (s.accepted, s.rejected, s.unstored) == (6, 0, 0) and s.store_retries >= 3


def test_a_second_reconnect_keeps_the_first_gaps_recheck(pipeline, standin):
    """Gap 1 holds an event that reaches history late; before its re-check is due, a live
    event moves `last_seen` on and a second reconnect opens gap 2. The re-check must still
    start at gap 1 (the earliest unfetched start), or the late event is lost."""
    app, accept, seen = pipeline
    clock = Clock()
    follower = Follower(Client(), PROJECT, accept, ping_interval_s=0.5, history_lag_s=12, clock=clock)
    with following(follower, standin) as errors:
        assert follower.connected.wait(10)
        first = publish(standin, 1, ago_s=20)  # streamed: last_seen 20 s ago
        wait_until(lambda: set(first) <= set(seen()), what="the first event")
        standin.refuse_streams = True
        standin.drop_streams()
        wait_until(lambda: not follower.connected.is_set(), what="disconnect 1")
        standin.hold_history = True
        late = publish(standin, 1, start=1, ago_s=10)  # gap 1, in history only, and late there
        standin.refuse_streams = False
        wait_until(lambda: follower.recheck is not None, timeout=10, what="reconnect 1 and its gap fetch")
        live = publish(standin, 1, start=2)  # streamed: last_seen now
        wait_until(lambda: set(live) <= set(seen()), what="the live event")
        standin.drop_streams()  # reconnect 2, within the re-check window
        wait_until(lambda: follower.stats.reconnects >= 2 and follower.gap_from is None, timeout=10,
                   what="reconnect 2 and its gap fetch")
        standin.release_history()
        assert not set(late) & set(seen())  # neither gap fetch could see it
        clock.offset = 12
        wait_until(lambda: set(late) <= set(seen()), timeout=10, what="the late event, via the kept re-check")
    assert not errors and all(n == 1 for n in Counter(seen()).values())


def test_unknown_devices_do_not_reload_the_device_list_per_event(pipeline, standin):
    app, accept, seen = pipeline
    follower = Follower(Client(), PROJECT, accept, ping_interval_s=1.0)
    with following(follower, standin) as errors:
        assert follower.connected.wait(10)
        lists_before = sum(1 for m, p in standin.requests if p.endswith("/devices"))
        ids = []
        for i in range(30):  # a device DT's list does not have (added after we loaded it, say)
            e = temperature(standin, "ghost", float(i), datetime.now(timezone.utc))
            standin.publish(PROJECT, e, deliver=False)
            ids.append(e["eventId"])
        wait_until(lambda: set(ids) <= set(seen()), what="30 events of an unknown device")
    assert not errors
    assert sum(1 for m, p in standin.requests if p.endswith("/devices")) - lists_before <= 1


def stream_cli(tmp_path, *extra: str) -> list[str]:
    return ["stream", "--db", str(tmp_path / "s.db"), "--ping-interval", "1s", *extra]


@pytest.mark.parametrize("line,why", [
    (b'{"result": []}', "not an event"),
    (b'{"result": {"event": "x"}}', "not an event"),
    (b"[1, 2]", "not an event"),
    (b"not json at all", "not JSON"),
    (b'{"result": ' * 50_000 + b"1" + b"}" * 50_000, "not JSON"),  # deeper than Python's parser goes
])
def test_a_malformed_stream_line_is_one_clear_line_and_exit_2(dt_env, standin, capsys, tmp_path, line, why):
    standin.hostile = stream_lines([line], then_hold_s=5)
    started = time.monotonic()
    code = main(stream_cli(tmp_path, "--duration", "20s"))
    err = capsys.readouterr().err
    assert code == 2 and why in err and "Traceback" not in err
    assert [x for x in err.splitlines() if x.startswith("dtconnector stream:")] == [
        x for x in err.splitlines() if why in x]
    assert time.monotonic() - started < 10


def test_a_malformed_event_in_the_stream_is_skipped_and_the_rest_stored(dt_env, standin, capsys, tmp_path):
    good = temperature(standin, "dev00", 1.0, datetime.now(timezone.utc))
    bad = dict(good, eventId="numeric-ts", timestamp=12345)
    standin.add_device(PROJECT, Device("dev00"))
    standin.hostile = stream_lines([json.dumps({"result": {"event": e}}).encode() for e in (bad, good)],
                                   then_hold_s=30)
    code = main(stream_cli(tmp_path, "--duration", "2s"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "skipping a malformed event from DT (eventId numeric-ts): `timestamp` is missing or not a string" in err
    assert "accepted 1" in err and "malformed 1" in err


def test_an_endless_stream_line_is_stopped(dt_env, standin, capsys, tmp_path):
    standin.hostile = endless_line(seconds=30)
    started = time.monotonic()
    code = main(stream_cli(tmp_path, "--duration", "30s"))
    err = capsys.readouterr().err
    assert code == 2 and "sent a line longer than 1 MiB" in err and "Traceback" not in err
    assert time.monotonic() - started < 15


def test_stream_escapes_what_dt_writes(dt_env, standin, capsys, tmp_path):
    standin.hostile = stream_lines([json.dumps({"error": {"code": 400, "message": "\x1b[2J\x1b]0;owned\x07\nFAKE: ok"}})
                                   .encode()], then_hold_s=0)
    code = main(stream_cli(tmp_path, "--duration", "1500ms"))
    err = capsys.readouterr().err
    assert code == 0 and "\x1b" not in err and "\\x1b[2J" in err and "\nFAKE" not in err


def test_a_broken_handler_module_or_setting_is_one_line_and_exit_2(dt_env, standin, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DT_HANDLERS", "no_such_handler_module")
    assert main(stream_cli(tmp_path, "--duration", "1s")) == 2
    one = capsys.readouterr().err.strip().splitlines()
    assert len(one) == 1 and one[0].startswith(
        "dtconnector stream: cannot load handler module 'no_such_handler_module' (DT_HANDLERS): "
        "ModuleNotFoundError: No module named 'no_such_handler_module' (no no_such_handler_module.py in "
    )
    monkeypatch.delenv("DT_HANDLERS")
    monkeypatch.setenv("DT_DEDUP_TTL_S", "soon")
    assert main(stream_cli(tmp_path, "--duration", "1s")) == 2
    assert capsys.readouterr().err.strip() == "dtconnector stream: DT_DEDUP_TTL_S must be a number"
