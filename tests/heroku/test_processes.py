"""Real processes, run from the built bundle with the Procfile's own commands: the web
process (`python -m heroku.web`: uvicorn serving `heroku.asgi.app`) answering over HTTP,
and the worker dyno stopped by SIGTERM (and SIGKILL) mid-job."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tests.dt import event_body, event_id_of, signed
from tests.platforms.heroku import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SLOW_HANDLERS = textwrap.dedent(
    """
    import os, time
    from core import on

    def _note(what, event):
        with open(os.environ["DT_TEST_LOG"], "a") as f:
            f.write(f"{what} {event.event_id}\\n")

    @on("*")
    def slow(event):
        _note("start", event)
        time.sleep(float(os.environ.get("DT_TEST_SLEEP_S", "0")))
        _note("done", event)
    """
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("bundle") / "app"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "heroku", str(dest)], check=True,
                   capture_output=True)
    return dest


def procfile(bundle: Path) -> dict[str, str]:
    lines = (bundle / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def dyno_env(h, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "REDIS_", "PYTHON"))}
    env.update(h.env)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_the_web_process_serves_the_app_with_the_procfile_command(h, bundle):
    port = free_port()
    command = procfile(bundle)["web"].replace("0.0.0.0", "127.0.0.1")
    assert "$PORT" in command
    proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=bundle, env=dyno_env(h, PORT=str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: healthy(port), 30, "the web process to answer /healthz", proc=proc)
        body = event_body()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/dt/events", body=body, headers=signed(body))
        response = conn.getresponse()
        assert response.status == 202
        assert json.loads(response.read()) == {"status": "accepted", "eventId": event_id_of(body)}
        assert h.queue_depth() == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            stop(proc)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def two_web_processes(h, bundle):
    """The Procfile's web command with WEB_CONCURRENCY=2, answering: (process, port, children)."""
    port = free_port()
    command = procfile(bundle)["web"].replace("0.0.0.0", "127.0.0.1")
    proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=bundle,
                            env=dyno_env(h, PORT=str(port), WEB_CONCURRENCY="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: healthy(port), 30, "the web processes to answer /healthz", proc=proc)
        yield proc, port, _children(proc.pid)
    finally:
        stop(proc)


def test_web_concurrency_serves_from_that_many_processes_and_one_dying_stops_the_dyno(h, bundle):
    with two_web_processes(h, bundle) as (proc, port, children):
        assert len(children) == 2
        for _ in range(10):  # new connections each: the kernel spreads them over both
            body = event_body()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/", body=body, headers=signed(body))
            assert conn.getresponse().status == 202
            conn.close()
        assert h.queue_depth() == 10
        os.kill(children[0], signal.SIGKILL)
        assert proc.wait(15) == 1  # the dyno stops, for Heroku to restart it whole
        assert not _alive(children[1])
        out = proc.stdout.read().decode()
        assert f"web process {children[0]} exited (killed by signal 9); stopping the dyno" in out


def test_web_concurrency_stops_cleanly_on_sigterm(h, bundle):
    with two_web_processes(h, bundle) as (proc, _, children):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not any(_alive(c) for c in children)


def test_a_malformed_web_concurrency_is_one_line_and_exit_2(h, bundle):
    command = procfile(bundle)["web"].replace("0.0.0.0", "127.0.0.1")
    out = subprocess.run(["bash", "-c", "exec " + command], cwd=bundle, capture_output=True, text=True, timeout=30,
                         env=dyno_env(h, PORT=str(free_port()), WEB_CONCURRENCY="two"))
    assert out.returncode == 2
    assert out.stderr.strip() == "dtconnector web dyno: WEB_CONCURRENCY must be a number"


def _start_worker(h, bundle, tmp_path, *args, **env) -> subprocess.Popen:
    (tmp_path / "slow_handlers.py").write_text(SLOW_HANDLERS)
    command = procfile(bundle)["worker"].split()
    return subprocess.Popen(
        command + list(args),
        cwd=bundle,
        env=dyno_env(h, PYTHONPATH=str(tmp_path), DT_HANDLERS="slow_handlers", DT_TEST_LOG=str(tmp_path / "log"),
                     **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _log(tmp_path) -> list[str]:
    path = tmp_path / "log"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _run_burst(h, bundle, tmp_path, **env) -> None:
    proc = _start_worker(h, bundle, tmp_path, "--burst", **env)
    try:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    finally:
        stop(proc)


def _accept(h) -> str:
    body = event_body()
    assert h.deliver(body, signed(body)).status == 202
    return event_id_of(body)


def test_sigterm_lets_the_current_job_finish_then_exits(h, bundle, tmp_path):
    event_id = _accept(h)
    proc = _start_worker(h, bundle, tmp_path, DT_TEST_SLEEP_S="2")
    try:
        wait_until(lambda: f"start {event_id}" in _log(tmp_path), 20, "the handler to start", proc=proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    finally:
        stop(proc)
    assert _log(tmp_path) == [f"start {event_id}", f"done {event_id}"]
    assert h.queue_depth() == 0
    _run_burst(h, bundle, tmp_path)  # the restarted dyno finds nothing to redo
    assert _log(tmp_path) == [f"start {event_id}", f"done {event_id}"]


def test_sigterm_past_the_grace_interrupts_and_the_restart_redelivers_once(h, bundle, tmp_path):
    event_id = _accept(h)
    proc = _start_worker(h, bundle, tmp_path, DT_TEST_SLEEP_S="120", DT_SHUTDOWN_GRACE_S="1")
    try:
        wait_until(lambda: f"start {event_id}" in _log(tmp_path), 20, "the handler to start", proc=proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
        assert time.monotonic() - started < 10  # well before Heroku's SIGKILL at 30 s
    finally:
        stop(proc)
    assert _log(tmp_path) == [f"start {event_id}"]
    assert h.queue_depth() == 1  # back on the queue, not lost
    client = redis.Redis.from_url(h.url)
    assert not any(int(v) for v in client.hvals(h.prefix + "attempts"))  # the interruption is not an attempt
    client.close()
    _run_burst(h, bundle, tmp_path)
    assert _log(tmp_path) == [f"start {event_id}", f"start {event_id}", f"done {event_id}"]
    assert h.queue_depth() == 0 and h.dead_letters() == []
    _run_burst(h, bundle, tmp_path)
    assert _log(tmp_path).count(f"done {event_id}") == 1


def test_sigkill_mid_job_is_redelivered_by_the_next_worker(h, bundle, tmp_path):
    event_id = _accept(h)
    fast = {"DT_HEARTBEAT_TTL_S": "1", "DT_WORKER_LEASE_S": "2"}
    proc = _start_worker(h, bundle, tmp_path, DT_TEST_SLEEP_S="120", **fast)
    try:
        wait_until(lambda: f"start {event_id}" in _log(tmp_path), 20, "the handler to start", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop(proc)
    assert h.queue_depth() == 1  # still in the dead worker's processing list
    proc = _start_worker(h, bundle, tmp_path, **fast)
    try:
        wait_until(lambda: f"done {event_id}" in _log(tmp_path), 30, "the redelivery", proc=proc)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        stop(proc)
    assert _log(tmp_path) == [f"start {event_id}", f"start {event_id}", f"done {event_id}"]
    assert h.queue_depth() == 0 and h.dead_letters() == []
