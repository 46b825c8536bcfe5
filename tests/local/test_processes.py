"""`dtconnector serve`'s process layout: a web process and a worker process, supervised.

Start-up (handlers loaded and named, or one line and exit 2 before anything listens),
restarts of either process, a clean stop on SIGTERM/SIGINT, kill -9 of each process in the
middle of a load, and the backlog bound (503 with Retry-After, nothing lost)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest

from tests.dt import event_body, event_id_of, signed
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_banner_names_the_handlers_loaded_for_each_event_type(make_server):
    server = make_server().start()
    wait_until(lambda: any("health:" in line for line in server.stderr), what="the whole banner")
    banner = "".join(server.stderr)
    assert "handler:       e2e_handlers.record for *" in banner
    roles = server.children()
    assert set(roles) == {"web", "worker"}


def test_a_broken_handler_module_is_one_line_and_exit_2_before_anything_listens(make_server, tmp_path):
    (tmp_path / "broken_handlers.py").write_text("import no_such_module_here\n")
    server = make_server(DT_HANDLERS="broken_handlers")
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "dtconnector", "serve", "--port", str(port), "--db", str(tmp_path / "e.db")],
        env=server.env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()  # one line (its wording is core.handlers'), no traceback
    assert line.startswith("dtconnector: cannot load handler module 'broken_handlers' (DT_HANDLERS): "
                           "ModuleNotFoundError: No module named 'no_such_module_here'"), line
    assert "receiving DT events" not in done.stdout + done.stderr
    with pytest.raises(ConnectionRefusedError):  # it never listened
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("role", ["worker", "web"])
def test_a_dead_process_is_restarted_and_says_so(make_server, role):
    server = make_server().start()
    victim = server.children()[role]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: any("running again" in line for line in server.stderr), what="the restart")
    said = "".join(server.stderr)
    assert f"the {role} process (pid {victim}) was killed by SIGKILL; restarting it" in said
    assert server.children()[role] != victim
    body = event_body(device="dev-after-restart")
    assert server.request("POST", "/", body, signed(body))[0] == 202
    wait_until(lambda: event_id_of(body) in server.seen(), what="the event handled")
    assert server.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_both_processes_cleanly(make_server, signum):
    server = make_server().start()
    roles = server.children()
    body = event_body()
    assert server.request("POST", "/", body, signed(body))[0] == 202
    wait_until(lambda: event_id_of(body) in server.seen(), what="the event handled")
    server.proc.send_signal(signum)
    assert server.proc.wait(30) == 0
    assert not any(_alive(pid) for pid in roles.values())
    said = f"dtconnector: stopped on {signum.name}; the web and worker processes have exited\n"
    wait_until(lambda: said in server.stderr, what="the stop said")  # the last line, read by a thread
    assert "Traceback" not in "".join(server.stderr)


def test_kill_9_of_the_web_and_the_worker_mid_load_loses_nothing_and_runs_no_handler_twice(make_server):
    """DT-like senders keep delivering (retrying anything not answered 2xx) while the web
    process, then the worker process, are killed with SIGKILL. Every acknowledged event is
    handled, and no handler runs twice (beyond the one window README states: the worker
    killed after a handler returned but before its completion was committed, at most once
    per worker kill)."""
    server = make_server(E2E_HANDLER_DELAY_S="0.002").start()
    bodies = [event_body(device=f"dev-{i % 7}", timestamp=f"2026-11-22T10:{i // 60:02d}:{i % 60:02d}Z")
              for i in range(600)]
    acked: set[str] = set()
    lock = threading.Lock()

    def deliver(chunk):
        for body in chunk:
            while True:  # DT: retry until a 2xx
                try:
                    status, _ = server.request("POST", "/", body, signed(body))
                except (OSError, http.client.HTTPException):
                    status = None
                if status in (200, 202):
                    with lock:
                        acked.add(event_id_of(body))
                    break

    senders = [threading.Thread(target=deliver, args=(bodies[i::6],)) for i in range(6)]
    for t in senders:
        t.start()
    wait_until(lambda: len(acked) >= 150, what="150 acknowledged events")
    os.kill(server.children()["web"], signal.SIGKILL)
    wait_until(lambda: len(acked) >= 300, what="acknowledgements after the web restart")
    os.kill(server.children()["worker"], signal.SIGKILL)
    for t in senders:
        t.join(120)
    assert acked == {event_id_of(b) for b in bodies}
    wait_until(lambda: len(set(server.seen())) == len(bodies), timeout=60, what="every event handled")
    wait_until(lambda: server.request("GET", "/healthz")[1]["queued"] == 0, what="an empty queue")
    seen = Counter(server.seen())
    assert set(seen) == acked
    assert sum(n - 1 for n in seen.values()) <= 1, [i for i, n in seen.items() if n > 1]
    said = "".join(server.stderr)
    assert "the web process" in said and "the worker process" in said
    assert server.stop() == 0


def test_past_the_backlog_bound_new_events_get_503_with_retry_after_and_nothing_is_lost(make_server, tmp_path):
    gate = tmp_path / "gate"
    server = make_server(DT_MAX_BACKLOG="3", E2E_GATE_FILE=str(gate)).start()
    first = [event_body(device=f"dev-{i}") for i in range(3)]
    for body in first:
        assert server.request("POST", "/", body, signed(body))[0] == 202
    wait_until(lambda: server.request("GET", "/healthz")[1]["queued"] >= 3, what="a backlog of 3")
    late = event_body(device="dev-late")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/", body=late, headers=signed(late))
    reply = conn.getresponse()
    assert reply.status == 503
    assert reply.getheader("Retry-After") == "5"
    assert reply.read() == b'{"error":"unavailable","reason":"too many events waiting for the worker"}'
    conn.close()
    gate.write_text("open")  # the handler is unblocked; the worker catches up
    wait_until(lambda: server.request("GET", "/healthz")[1]["queued"] == 0, what="the backlog drained")
    assert server.request("POST", "/", late, signed(late))[0] == 202  # DT's retry
    wait_until(lambda: len(server.seen()) == 4, what="every event handled")
    assert set(server.seen()) == {event_id_of(b) for b in first + [late]}


def test_synchronous_full_is_a_setting_and_a_bad_value_is_one_line(make_server, tmp_path):
    server = make_server(DT_SQLITE_SYNCHRONOUS="FULL").start()
    body = event_body()
    assert server.request("POST", "/", body, signed(body))[0] == 202
    bad = subprocess.run(
        [sys.executable, "-m", "dtconnector", "serve", "--port", "0", "--db", str(tmp_path / "x.db")],
        env={**server.env, "DT_SQLITE_SYNCHRONOUS": "sometimes"}, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "dtconnector: DT_SQLITE_SYNCHRONOUS must be NORMAL or FULL"


def test_database_synchronous_mode_follows_the_setting(tmp_path):
    from local_receiver.sqlite_store import Database

    for mode, number in (("NORMAL", 1), ("FULL", 2)):
        db = Database(tmp_path / f"{mode}.db", synchronous=mode)
        try:
            assert db.query("PRAGMA synchronous") == [(number,)]
        finally:
            db.close()


def test_a_process_that_ignores_sigterm_is_killed_after_the_stop_timeout_and_that_is_said(monkeypatch, capsys):
    from local_receiver import serve

    monkeypatch.setattr(serve, "STOP_TIMEOUT_S", 0.5)
    supervisor = serve.Supervisor(":memory:", socket.socket(), {})
    stubborn = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
    supervisor.worker.proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    supervisor.web.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    supervisor.worker.proc.stdout.readline()  # its SIGTERM is ignored from now on
    supervisor._stop_all()
    assert supervisor.worker.proc.returncode == -signal.SIGKILL
    assert supervisor.web.proc.returncode == -signal.SIGTERM
    said = capsys.readouterr().err
    assert said == ("dtconnector: the worker process did not stop within 0.5 s of SIGTERM; killed it "
                    "(nothing acknowledged is lost: the next start takes it up)\n")
    supervisor.sock.close()
