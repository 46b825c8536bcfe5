"""`dtconnector`: run the local receiver, inspect its state, and send DT-like events.

    dtconnector serve [--host 127.0.0.1] [--port 8080] [--db PATH] [--dev]
    dtconnector state [--device ID] [--db PATH]
    dtconnector dead-letters [--requeue] [--db PATH]
    dtconnector stats [--url URL] [--db PATH] [--json]  (metrics of a running receiver; store size)
    dtconnector send --url URL [--secret S] ...      (the DT Cloud emulator)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path

from core import logs
from core.config import ConfigError, Settings

from .app import DEFAULT_DB, AlreadyRunning, LocalApp
from .sqlite_store import Database, SQLiteQueue, SQLiteStateStore

DEV_SECRET_FILE = ".dtconnector/dev-secret"


def _dev_secret(path: Path) -> tuple[str, bool]:
    """The development secret in `path`, created on first use. Returns (secret, created)."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


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


def _configure_logging(level: str) -> None:
    # Our JSON lines never show thread or process names: skip collecting them per record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logs.configure(level, stream=_BatchedStream(sys.stdout))


def cmd_serve(args: argparse.Namespace) -> int:
    _configure_logging(os.environ.get("DT_LOG_LEVEL", "INFO"))
    overrides = {}
    notes = []
    if args.dev and not os.environ.get("DT_SIGNATURE_SECRET"):
        secret_path = Path(args.secret_file)
        value, created = _dev_secret(secret_path)
        from core.config import Secret

        overrides["secrets"] = (Secret(value),)
        notes.append(
            f"DT_SIGNATURE_SECRET is not set: {'generated' if created else 'using'} a development "
            f"secret in {secret_path} (set DT_SIGNATURE_SECRET to use your connector's own)."
        )
    from core.serving import Limits, bind, serve

    try:
        settings = Settings.from_env(**overrides)
        limits = Limits.from_env()
        app = LocalApp(args.db, settings)  # reads DT_DEAD_LETTER_RETENTION_S, DT_SWEEP_INTERVAL_S
    except ConfigError as exc:
        print(f"dtconnector: {exc}", file=sys.stderr)
        return 2
    try:
        app.take_ownership()
    except AlreadyRunning as exc:
        print(f"dtconnector: {exc}", file=sys.stderr)
        return 1
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"dtconnector: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    asgi = app.asgi(offload=False)
    app.start_worker()
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}/"

    prog = _prog()
    secret_hint = (
        f'"$(cat {args.secret_file})"' if "secrets" in overrides else '"$DT_SIGNATURE_SECRET"'
    )
    lines = [
        f"dtconnector: receiving DT events at {url} (database {args.db})",
        f"  health:        curl {url}healthz",
        f"  send events:   {prog} send --url {url} --secret {secret_hint} --count 20",
        f"  device state:  {prog} state --db {args.db}",
        *(f"  note: {n}" for n in notes),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
    try:
        serve(asgi, sock, limits)
    finally:
        sock.close()
        app.stop()
    return 0


def _prog() -> str:
    """How the user can call us again: `dtconnector` if it is on PATH, else its path."""
    exe = Path(sys.argv[0])
    if exe.name == "dtconnector" and shutil.which("dtconnector") != str(exe.resolve()) and exe.exists():
        try:
            return str(exe.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(exe.resolve())
    return "dtconnector"


def _open_existing(db: str) -> Database:
    """The database of a (possibly running) receiver, for reading; no receiver or worker."""
    if not Path(db).exists():
        raise SystemExit(f"dtconnector: no database at {db} (start `dtconnector serve` first)")
    return Database(db)


def cmd_state(args: argparse.Namespace) -> int:
    state = SQLiteStateStore(_open_existing(args.db))
    states = state.get_device(args.device) if args.device else state.all()
    out: dict = {}
    for s in states:
        out.setdefault(s.device_id, {})[s.event_type] = {
            "eventId": s.event_id,
            "timestamp": s.timestamp,
            "data": s.data,
            "labels": s.labels,
        }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    queue = SQLiteQueue(_open_existing(args.db))
    if args.requeue:
        print(f"requeued {queue.requeue_dead_letters()} dead-lettered events")
        return 0
    for item in queue.dead_letters():
        item.pop("body")
        print(json.dumps(item))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtconnector", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local receiver (HTTP endpoint + worker on SQLite)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--db", default=DEFAULT_DB)
    serve.add_argument("--dev", action="store_true", help="generate/use a development secret if none is set")
    serve.add_argument("--secret-file", default=DEV_SECRET_FILE, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    state = sub.add_parser("state", help="print the latest stored state per device as JSON")
    state.add_argument("--device")
    state.add_argument("--db", default=DEFAULT_DB)
    state.set_defaults(func=cmd_state)

    from .stats import add_stats_parser

    add_stats_parser(sub)

    dead = sub.add_parser("dead-letters", help="list (or --requeue) events whose handlers kept failing")
    dead.add_argument("--requeue", action="store_true")
    dead.add_argument("--db", default=DEFAULT_DB)
    dead.set_defaults(func=cmd_dead_letters)

    try:
        from emulator.cli import add_send_parser
    except ImportError:  # the emulator is optional in a copied bundle
        pass
    else:
        add_send_parser(sub)
    try:  # connector / backfill / stream: DT's REST API (the `dt` extra, imported lazily)
        from dtcloud.cli import add_parsers as add_dtcloud_parsers
    except ImportError:  # not in a copied bundle
        pass
    else:
        add_dtcloud_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`dtconnector state | head`): stop quietly. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again (Python's docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
