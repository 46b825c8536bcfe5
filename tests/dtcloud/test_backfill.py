"""`dtconnector backfill` from the stand-in's history into a real `dtconnector serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dtconnector.cli import main
from tests.dtcloud.conftest import PROJECT, add_history
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_three_day_outage_is_backfilled_exactly_once_and_rerun_adds_nothing(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    events = add_history(standin, devices=4, hours=96)  # 4 days x 4 devices x 2 types, in history only
    run(capsys, "connector", "apply", "--name", "recv", "--url", serve.url, "--events", "temperature,touch",
        "--labels", "room")
    def when(e):
        return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))

    outage_start = datetime.now(timezone.utc) - timedelta(days=3)
    before = sorted((e for e in events if when(e) < outage_start), key=when)
    missed = [e for e in events if when(e) >= outage_start]
    # before the outage DT delivered live (the stand-in's live path): the receiver has those
    project = standin.projects[PROJECT]
    conn = next(iter(project.connectors.values()))
    for e in before[-20:]:
        assert standin._deliver(project, conn, e)
    wait_until(lambda: len(serve.seen()) == 20, what="pre-outage deliveries")

    # --since two hours before the outage: the overlap is absorbed by the receiver's dedup
    since = outage_start - timedelta(hours=2)
    overlap = [e for e in before[-20:] if when(e) >= since]
    older = [e for e in before if since <= when(e) and e not in overlap]
    code, out, err = run(capsys, "backfill", "--since", since.isoformat(), "--url", serve.url, "--connector", "recv")
    assert code == 0, err
    fetched = len(missed) + len(overlap) + len(older)
    assert out.strip() == (f"backfill: fetched {fetched} events from 4 devices; sent {fetched} requests; "
                           f"accepted {len(missed) + len(older)}, duplicates {len(overlap)}")
    assert overlap and missed
    wait_until(lambda: len(serve.seen()) == 20 + len(missed) + len(older), what="every missed event handled")
    seen = Counter(serve.seen())
    assert all(n == 1 for n in seen.values())
    assert {e["eventId"] for e in missed} <= set(seen)
    state = serve.state()
    for dev in ("dev00", "dev03"):
        newest = max((e for e in events if e["targetName"].endswith(dev) and e["eventType"] == "temperature"),
                     key=lambda e: e["timestamp"])
        assert state[dev]["temperature"]["eventId"] == newest["eventId"]
        assert state[dev]["temperature"]["labels"] == {"room": f"r{int(dev[3:])}"}  # only the connector's keys
    assert "backfill: [4/4]" in err  # progress on stderr
    assert not Path(f".dtconnector/backfill-{PROJECT}.json").exists()  # complete: checkpoint removed

    code, out, _ = run(capsys, "backfill", "--since", since.isoformat(), "--url", serve.url, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["accepted"] == 0 and summary["duplicates"] == summary["fetched"] == fetched
    time.sleep(0.5)
    assert len(serve.seen()) == 20 + len(missed) + len(older)  # no handler ran again


def test_dry_run_counts_without_sending(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    events = add_history(standin, devices=2, hours=5, types=("touch",))
    code, out, _ = run(capsys, "backfill", "--since", "1d", "--url", serve.url, "--dry-run", "--types", "touch")
    assert code == 0 and f"{len(events)} events from 2 devices would be sent" in out
    time.sleep(0.3)
    assert serve.health()["queued"] == 0 and serve.seen() == []


def test_window_limits_and_filters(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    events = add_history(standin, devices=3, hours=10)
    code, _, err = run(capsys, "backfill", "--since", "40d", "--url", serve.url)
    assert code == 2 and "31 days" in err
    code, out, _ = run(capsys, "backfill", "--since", "5h", "--url", serve.url, "--devices", "dev01",
                       "--types", "touch", "--json")
    summary = json.loads(out)
    cutoff = datetime.now(timezone.utc) - timedelta(hours=5)
    expected = [e for e in events if e["targetName"].endswith("dev01") and e["eventType"] == "touch"
                and datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) >= cutoff]
    assert summary["fetched"] == summary["accepted"] == len(expected) > 0


def test_killed_backfill_resumes_where_it_stopped(dt_env, standin, make_serve, tmp_path):
    serve = make_serve().start()
    events = add_history(standin, devices=3, hours=60, types=("temperature",))  # 180 events, 60 per device
    checkpoint = tmp_path / "cp.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "dtconnector", "backfill", "--since", "3d", "--url", serve.url,
            "--checkpoint", str(checkpoint), "--rate", "60", "--concurrency", "2"]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: checkpoint.exists() and len(json.loads(checkpoint.read_text())["devices"]) >= 1,
               timeout=60, what="a checkpointed chunk")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    done_first = len(serve.seen())
    assert 0 < done_first < len(events)

    second = subprocess.run(args[:-4], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stderr and "skipped" in second.stdout
    skipped = int(second.stdout.split("skipped ")[1].split()[0])
    assert skipped >= 50  # at least the checkpointed chunk was not fetched-and-sent again
    wait_until(lambda: len(set(serve.seen())) == len(events), what="all 180 handled")
    assert all(n == 1 for n in Counter(serve.seen()).values())
    assert not checkpoint.exists()


def test_backfill_without_secret_or_credentials_is_usage_error(dt_env, standin, capsys, monkeypatch):
    monkeypatch.delenv("DT_SIGNATURE_SECRET")
    code, _, err = run(capsys, "backfill", "--since", "1d", "--url", "http://127.0.0.1:9/")
    assert code == 2 and "DT_SIGNATURE_SECRET" in err
    monkeypatch.setenv("DT_SIGNATURE_SECRET", "x" * 32)
    monkeypatch.setenv("DT_SERVICE_ACCOUNT_KEY_ID", "unknown-key")
    code, _, err = run(capsys, "backfill", "--since", "1d", "--url", "http://127.0.0.1:9/")
    assert code == 2 and "credentials" in err and "Traceback" not in err


def test_bad_url_and_unwritable_checkpoint_are_clear_errors(dt_env, standin, capsys, make_serve, tmp_path):
    add_history(standin, devices=1, hours=1)
    code, _, err = run(capsys, "backfill", "--since", "1d", "--url", "ftp://x/")
    assert code == 2 and "--url must be" in err
    serve = make_serve().start()
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "backfill", "--since", "1d", "--url", serve.url, "--checkpoint",
                       str(blocker / "cp.json"))
    assert code == 2 and "Traceback" not in err and str(blocker) in err


# --- naming a mistake at once; a true summary ------------------------------------------------


def backfill_process(*argv: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dtconnector", "backfill", *argv],
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def first_line_with(stream, needle: str, timeout: float) -> tuple[str, float]:
    """The first line of `stream` containing `needle`, and the seconds it took to appear."""
    started = time.monotonic()
    lines = []

    def read():
        for line in stream:
            lines.append(line)
            if needle in line:
                return
    import threading

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    found = [x for x in lines if needle in x]
    assert found, f"no line with {needle!r} within {timeout} s: {lines}"
    return found[0], time.monotonic() - started


def test_wrong_secret_is_named_within_seconds_and_stops_with_a_summary_by_answer(dt_env, standin, make_serve):
    serve = make_serve().start()
    add_history(standin, devices=3, hours=30)  # 180 events over 3 devices
    proc = backfill_process("--since", "3d", "--url", serve.url, DT_SIGNATURE_SECRET="the-wrong-secret-" + "x" * 20)
    line, seconds = first_line_with(proc.stderr, "401", timeout=15)
    assert seconds < 15, "time to the first clear error"
    assert "401: token signature is invalid — check the secret" in line
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "backfill: stopped: 401: token signature is invalid" in out
    summary = [x for x in out.splitlines() if x.startswith("backfill: fetched")][0]
    assert "accepted 0, duplicates 0; refused " in summary and "(401: " in summary and "not tried " in summary
    assert "3 devices (0 done, 3 not finished)" in summary
    refused = int(summary.split("refused ")[1].split()[0])
    not_tried = int(summary.split("not tried ")[1].split()[0].rstrip(";"))
    assert refused + not_tried == 60  # the first device's 60 events: every one accounted for
    assert "the-wrong-secret" not in out + err and serve.seen() == []


def test_receiver_down_stops_once_not_per_device(dt_env, standin):
    import socket

    add_history(standin, devices=3, hours=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    started = time.monotonic()
    proc = backfill_process("--since", "1d", "--url", url, "--max-age", "2s", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert time.monotonic() - started < 20  # one --max-age, not one per device
    assert f"cannot deliver to {url}: connection refused; retrying each event for up to 2s" in err
    summary = json.loads(out)
    assert summary["devices_done"] == 0 and summary["accepted"] == 0
    assert sum(summary["given_up"].values()) >= 1 and list(summary["given_up"]) == ["connection refused"]
    assert summary["not_acknowledged"] == 10  # the first device's 10 events
    assert "connection refused" in summary["stopped"] and "--max-age" in summary["stopped"]


def test_a_malformed_event_in_history_is_named_and_skipped_not_fatal(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    events = add_history(standin, devices=2, hours=3, types=("touch",))
    standin.extra_history["dev00"] = [dict(events[0], eventId="numeric-ts", timestamp=1700000000),
                                      {"eventId": "no-type", "timestamp": events[0]["timestamp"]}, "not an object"]
    code, out, err = run(capsys, "backfill", "--since", "1d", "--url", serve.url, "--json")
    summary = json.loads(out)
    assert code == 1 and "Traceback" not in err  # not everything delivered: said, not crashed
    assert summary["malformed"] == 3 and summary["accepted"] == len(events) and summary["devices_done"] == 2
    assert "skipping a malformed event from DT (eventId numeric-ts): `timestamp` is missing or not a string" in err
    assert "(eventId no-type): `eventType` is missing or not a string" in err
    wait_until(lambda: len(serve.seen()) == len(events), what="the well-formed events handled")


def test_ctrl_c_prints_a_true_summary(dt_env, standin, make_serve):
    serve = make_serve().start()
    add_history(standin, devices=3, hours=30, types=("temperature",))
    proc = backfill_process("--since", "3d", "--url", serve.url, "--rate", "20", "--concurrency", "2", "--json")
    first_line_with(proc.stderr, "events to send", timeout=30)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    summary = json.loads(out)
    assert summary["interrupted"] and 0 < summary["accepted"] < 90
    assert summary["not_acknowledged"] == summary["fetched"] - summary["accepted"] - summary["duplicates"] > 0
    # Every acknowledged event reached the receiver. A request the interrupt cut off before its
    # answer is rightly counted unacknowledged, yet the receiver may have stored it: at most one
    # per connection (--concurrency 2) more than acknowledged.
    seen = wait_until(lambda: len(serve.seen()) >= summary["accepted"] and serve.seen(),
                      what="the receiver got every event counted as accepted")
    assert summary["accepted"] <= len(set(seen)) <= summary["accepted"] + 2, (len(seen), summary)


def test_one_connection_pool_for_the_whole_run(dt_env, standin, capsys):
    """180 events in 50-event chunks over 3 devices, --concurrency 2: two keep-alive connections
    carry every request (one pool for the run, not a new sender per chunk)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    peers: list[tuple[str, int]] = []

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            peers.append(self.client_address)
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        events = add_history(standin, devices=3, hours=60, types=("temperature",))
        code, out, err = run(capsys, "backfill", "--since", "3d", "--url", f"http://127.0.0.1:{server.server_port}/",
                             "--concurrency", "2", "--json")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, err
    assert json.loads(out)["accepted"] == len(peers) == len(events) == 180
    assert len(set(peers)) <= 2
