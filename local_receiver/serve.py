"""`dtconnector serve`: a web process and a worker process on one SQLite file, supervised.

    supervisor (this process: holds the file's lock and the listening socket)
    ├── worker process   the user's handlers (`LocalWorker`), the cleanup of expired records
    └── web process      uvicorn serving `LocalApp.asgi()` on the inherited socket

Why two processes: the handlers are the user's code, of any speed, and Python runs one
thread at a time; in the web process's thread they took the CPU (and the GIL) that
answering DT needs. Apart, each has a core, and the two share only the SQLite file,
which both already had to survive a crash of the other for.

Start-up: the worker starts first, loads ``DT_HANDLERS`` and says so on a pipe; a broken
handler module is its one line on stderr and `serve` exits 2 before anything listens, so
no event is acknowledged that no handler could run. Then the socket listens and the web
process starts. Either process dying is restarted (after a short pause if it keeps
dying) and said on stderr; SIGTERM or Ctrl-C stops both (each finishes what it is doing)
and exits 0. The children die with the supervisor (``PR_SET_PDEATHSIG``), so a
``kill -9`` of `serve` is a kill -9 of all three, which the database survives.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from core import logs
from core.config import ConfigError, Settings

#: How long a child has to say it is ready (a worker importing heavy handler modules).
READY_TIMEOUT_S = 120.0
#: How long SIGTERM'd children have to finish before they are killed.
STOP_TIMEOUT_S = 30.0
#: A child that ran this long before dying is restarted at once; sooner, after a pause
#: that doubles up to `MAX_RESTART_PAUSE_S` (a crash loop must not spin).
STABLE_AFTER_S = 10.0
MAX_RESTART_PAUSE_S = 10.0
EXIT_CONFIG = 2  # a child's (and serve's) exit status for a configuration error


# -- logging (the children's JSON lines on stdout) ------------------------------------------


class _BatchedStream:
    """stdout for log lines, flushed at most every `interval_s` (and by a timer), not on
    every line: a flush per event is a system call per event on the request path."""

    def __init__(self, inner, interval_s: float = 0.05):
        self._inner = inner
        self._interval = interval_s
        self._last = 0.0
        self._lock = threading.Lock()
        threading.Thread(target=self._timer, name="dtconnector-log-flush", daemon=True).start()

    def write(self, text: str) -> int:
        return self._inner.write(text)

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            with self._lock:
                try:
                    self._inner.flush()
                except (OSError, ValueError):
                    pass

    def _timer(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush(force=True)


def configure_logging(level: str) -> None:
    # Our JSON lines never show thread or process names: skip collecting them per record.
    import logging

    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logs.configure(level, stream=_BatchedStream(sys.stdout))


# -- the supervisor --------------------------------------------------------------------------


def _dev_secret(path: Path) -> tuple[str, bool]:
    """The development secret in `path`, created on first use. Returns (secret, created)."""
    import secrets

    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


def _fail(message: str, status: int) -> int:
    print(f"dtconnector: {message}", file=sys.stderr, flush=True)
    return status


def _check_settings(env: dict) -> None:
    """Every setting the children read, checked here first: one line and exit 2."""
    from core.asgi import metrics_token_setting
    from core.config import number_setting
    from core.receiver import max_backlog_setting
    from core.retention import dead_letter_retention_s
    from core.serving import Limits

    from .sqlite_store import synchronous_setting

    Settings.from_env(env)
    Limits.from_env(env)
    max_backlog_setting(env)
    synchronous_setting(env)
    metrics_token_setting(env)
    dead_letter_retention_s(env)
    for name in ("DT_SWEEP_INTERVAL_S", "DT_RETRY_DELAY_S"):
        number_setting(env, name, 0.0)


def run(args: argparse.Namespace, prog: str) -> int:
    """`dtconnector serve` (the supervisor). Returns the exit status."""
    from .app import AlreadyRunning, exclusive_lock

    env = dict(os.environ)
    notes = []
    if args.dev and not env.get("DT_SIGNATURE_SECRET"):
        secret_path = Path(args.secret_file)
        value, created = _dev_secret(secret_path)
        env["DT_SIGNATURE_SECRET"] = value  # the web process's environment only, never printed
        notes.append(
            f"DT_SIGNATURE_SECRET is not set: {'generated' if created else 'using'} a development "
            f"secret in {secret_path} (set DT_SIGNATURE_SECRET to use your connector's own)."
        )
    try:
        _check_settings(env)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    db = str(args.db)
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = exclusive_lock(db + ".lock", f"another dtconnector is already serving {db}")
    except AlreadyRunning as exc:
        return _fail(str(exc), 1)
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as exc:
        lock.close()
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}", 1)
    sock.set_inheritable(True)
    supervisor = Supervisor(db, sock, env)
    try:
        return supervisor.run(lambda handlers: _banner(args, prog, sock, handlers, notes, env))
    finally:
        sock.close()
        lock.close()


def _banner(args, prog: str, sock: socket.socket, handlers: dict, notes: list[str], env: dict) -> None:
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}/"
    secret_hint = f'"$(cat {args.secret_file})"' if notes else '"$DT_SIGNATURE_SECRET"'
    if handlers:
        loaded = [f"  handler:       {name} for {', '.join(types)}" for name, types in handlers.items()]
    else:
        why = "DT_HANDLERS names no handler" if env.get("DT_HANDLERS") else "DT_HANDLERS is not set"
        loaded = [f"  handlers:      none ({why}: events are stored and device state kept)"]
    lines = [
        f"dtconnector: receiving DT events at {url} (database {args.db})",
        *loaded,
        f"  health:        curl {url}healthz",
        f"  send events:   {prog} send --url {url} --secret {secret_hint} --count 20",
        f"  device state:  {prog} state --db {args.db}",
        *(f"  note: {n}" for n in notes),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


class _Child:
    def __init__(self, role: str):
        self.role = role
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.pause = 0.0
        self.restart_at: float | None = None


class Supervisor:
    """Starts, watches and stops the two children (see the module doc)."""

    def __init__(self, db: str, sock: socket.socket, env: dict):
        self.db = db
        self.sock = sock
        self.env = env
        self.worker = _Child("worker")
        self.web = _Child("web")
        self.stop_signal: int | None = None  # the signal that asked us to stop, once one has
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # -- children ---------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> tuple[subprocess.Popen, int]:
        ready_r, ready_w = os.pipe()
        fds = [ready_w]
        argv = [sys.executable, "-m", "local_receiver.serve", child.role, "--db", self.db,
                "--ready-fd", str(ready_w), "--parent", str(os.getpid())]
        if child.role == "web":
            fds.append(self.sock.fileno())
            argv += ["--fd", str(self.sock.fileno())]
        try:
            proc = subprocess.Popen(argv, env=self.env, pass_fds=fds, stdin=subprocess.DEVNULL)
        finally:
            os.close(ready_w)
        child.proc, child.started, child.restart_at = proc, time.monotonic(), None
        return proc, ready_r

    def _await_ready(self, child: _Child, ready_r: int) -> dict | None:
        """The child's ready message, or None when it exited (or never answered) first."""
        data = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([ready_r], [], [], 0.2)
                if readable:
                    chunk = os.read(ready_r, 65536)
                    if not chunk:
                        break
                    data += chunk
                    if data.endswith(b"\n"):
                        return json.loads(data)
                elif child.proc.poll() is not None:
                    break
        finally:
            os.close(ready_r)
        if child.proc.poll() is None:  # alive but silent: stuck at start
            child.proc.kill()
        child.proc.wait()
        return None

    def _start(self, child: _Child) -> dict | None:
        proc, ready_r = self._spawn(child)
        return self._await_ready(child, ready_r)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, announce) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self._wake_w)
        try:
            ready = self._start(self.worker)
            if ready is None:
                return self._startup_failed(self.worker)
            self.sock.listen(2048)  # connects queue from now on; nothing answered before the worker is known
            if self._start(self.web) is None:
                self._stop_all()
                return self._startup_failed(self.web)
            announce(ready.get("handlers", {}))
            return self._supervise()
        finally:
            signal.set_wakeup_fd(-1)

    def _on_signal(self, signum, frame) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.stop_signal = signum

    def _startup_failed(self, child: _Child) -> int:
        self._stop_all()
        code = child.proc.returncode if child.proc else 1
        if code == EXIT_CONFIG:
            return EXIT_CONFIG  # the child printed its one line
        if code not in (0, 1):
            print(f"dtconnector: the {child.role} process could not start ({_describe(code)})", file=sys.stderr,
                  flush=True)
        return 1

    def _supervise(self) -> int:
        while self.stop_signal is None:
            timeout = None
            now = time.monotonic()
            for child in (self.worker, self.web):
                if child.restart_at is not None:
                    timeout = max(0.0, min(timeout if timeout is not None else 1e9, child.restart_at - now))
            try:
                select.select([self._wake_r], [], [], timeout)
            except InterruptedError:
                pass
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            if self.stop_signal is not None:
                break
            for child in (self.worker, self.web):
                code = child.proc.poll() if child.restart_at is None else None
                if code is not None:
                    if code == EXIT_CONFIG:  # e.g. a handler module broken since start
                        self._stop_all()
                        return EXIT_CONFIG
                    self._schedule_restart(child, code)
                if child.restart_at is not None and time.monotonic() >= child.restart_at:
                    self._restart(child)
        self._stop_all()
        print(f"dtconnector: stopped on {signal.Signals(self.stop_signal).name}; the web and worker processes have exited",
              file=sys.stderr, flush=True)
        return 0

    def _schedule_restart(self, child: _Child, code: int) -> None:
        ran = time.monotonic() - child.started
        child.pause = 0.0 if ran >= STABLE_AFTER_S else min(max(0.1, child.pause * 2), MAX_RESTART_PAUSE_S)
        child.restart_at = time.monotonic() + child.pause
        when = "now" if not child.pause else f"in {child.pause:.1f} s"
        print(f"dtconnector: the {child.role} process (pid {child.proc.pid}) {_describe(code)}; restarting it {when}",
              file=sys.stderr, flush=True)

    def _restart(self, child: _Child) -> None:
        proc, ready_r = self._spawn(child)
        threading.Thread(target=self._announce_restart, args=(child, proc, ready_r), daemon=True).start()

    def _announce_restart(self, child: _Child, proc: subprocess.Popen, ready_r: int) -> None:
        if self._await_ready(child, ready_r) is not None:
            print(f"dtconnector: the {child.role} process is running again (pid {proc.pid})", file=sys.stderr,
                  flush=True)

    def _stop_all(self) -> None:
        live = [c for c in (self.web, self.worker) if c.proc is not None and c.proc.poll() is None]
        for child in live:
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in live:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
                print(f"dtconnector: the {child.role} process did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM; "
                      "killed it (nothing acknowledged is lost: the next start takes it up)",
                      file=sys.stderr, flush=True)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# -- the children ------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Be killed when the supervisor dies (Linux), or notice it within a second."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            raise OSError
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="dtconnector-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def _ready(fd: int, message: dict) -> None:
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(message) + "\n")


def worker_main(db: str, ready_fd: int) -> int:
    return _work(db, lambda handlers: _ready(ready_fd, {"handlers": handlers}))


def _work(db: str, announce, lock_wait_s: float | None = None) -> int:
    """The worker process: load the handlers (a broken module: one line, exit 2), own
    the database, `announce` the handlers loaded, process until SIGTERM/SIGINT."""
    from core.handlers import registry

    from .app import WORKER_LOCK_WAIT_S, AlreadyRunning, LocalWorker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        worker = LocalWorker(db)  # loads DT_HANDLERS
    except ConfigError as exc:  # HandlerModuleError included
        return _fail(str(exc), EXIT_CONFIG)
    try:
        worker.take_ownership(WORKER_LOCK_WAIT_S if lock_wait_s is None else lock_wait_s)
    except AlreadyRunning as exc:
        return _fail(str(exc), 1)
    _freeze_startup_objects()
    announce(registry.summary())
    threading.Thread(target=_forward_stop, args=(stop, worker), daemon=True).start()
    try:
        worker.run(stop)
    finally:
        worker.stop()
    return 0


def _forward_stop(stop: threading.Event, worker) -> None:
    """SIGTERM stops the worker between two events, not after a whole batch."""
    stop.wait()
    worker.runner.stopping.set()
    from .wake import WakeWriter

    WakeWriter(worker.db.path)()


def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, settings, the handlers) out of every garbage
    collection from now on: a full collection otherwise walks them all again, and under
    load one comes every few thousand events."""
    import gc

    gc.collect()
    gc.freeze()


def web_main(db: str, fd: int, ready_fd: int) -> int:
    from core.asgi import metrics_token_setting
    from core.serving import Limits, serve

    from .app import LocalApp

    sys.setswitchinterval(0.001)  # the loop and the writer thread hand over sooner
    limits = Limits.from_env()
    app = LocalApp(db, metrics_token=metrics_token_setting())
    sock = socket.socket(fileno=fd)
    _freeze_startup_objects()
    _ready(ready_fd, {})
    try:
        serve(app.asgi(), sock, limits)
    finally:
        app.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_receiver.serve", description="a child of dtconnector serve")
    parser.add_argument("role", choices=("web", "worker"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--fd", type=int)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    configure_logging(os.environ.get("DT_LOG_LEVEL", "INFO"))
    if args.role == "worker":
        return worker_main(args.db, args.ready_fd)
    return web_main(args.db, args.fd, args.ready_fd)


# -- `dtconnector worker --db PATH` (for the mounted apps) ---------------------------------


def run_worker(args: argparse.Namespace) -> int:
    """The worker alone, for a `LocalApp` mounted in your own service (which has no
    worker): the same process `serve` starts, in the foreground, until SIGTERM/Ctrl-C."""
    configure_logging(os.environ.get("DT_LOG_LEVEL", "INFO"))

    def announce(handlers: dict) -> None:
        listed = "; ".join(f"{name} for {', '.join(types)}" for name, types in handlers.items()) or "none"
        print(f"dtconnector: worker processing {args.db} (handlers: {listed})", file=sys.stderr, flush=True)

    code = _work(args.db, announce, lock_wait_s=0)
    if code == 0:
        print("dtconnector: worker stopped", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
