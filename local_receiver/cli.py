"""`dtconnector`: run the local receiver, inspect its state, and send DT-like events.

    dtconnector serve [--host 127.0.0.1] [--port 8080] [--db PATH] [--dev]
    dtconnector state [--device ID] [--db PATH]
    dtconnector dead-letters [--json] [--requeue] [--db PATH]
    dtconnector stats [--url URL] [--db PATH] [--json]  (metrics of a running receiver; store size)
    dtconnector send --url URL [--secret S] ...      (the DT Cloud emulator)
    dtconnector --version
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
    if not out:
        print(f"no device state{f' for device {args.device}' if args.device else ''} in {args.db} yet",
              file=sys.stderr)
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def describe_dead_letter(item: dict) -> dict:
    """One dead letter as `dtconnector dead-letters` shows it: the event (type, device,
    its time) read from the stored body, and why it failed (handler, exception, where)
    read from the error text `core.worker.HandlerFailed` wrote."""
    from core.events import InvalidEvent, parse_event
    from core.tracing import split_message
    from core.worker import HandlerFailed

    out = {"eventId": item["eventId"], "eventType": None, "deviceId": None, "timestamp": None}
    try:
        event = parse_event(split_message(item["body"])[0])
    except InvalidEvent:  # a poison message: its error says why
        pass
    else:
        out.update(eventType=event.event_type, deviceId=event.device_id, timestamp=event.raw["event"]["timestamp"])
    out.update(deadAt=_iso(item["deadAt"]), attempts=item["attempts"])
    failure = HandlerFailed.parse(item["error"] or "") or {}  # {} for a poison message or a store error
    for key in ("handler", "exceptionType", "exceptionMessage", "raisedAt"):
        out[key] = failure.get(key) or None
    out["error"] = item["error"]
    return out


def _print_dead_letter(d: dict) -> None:
    what = ", ".join(x for x in (d["eventType"], d["deviceId"] and f"device {d['deviceId']}") if x)
    lines = [f"event {d['eventId']}" + (f" ({what})" if what else "")]
    if d["handler"]:
        lines.append(f"  handler:   {d['handler']}")
        if d["exceptionType"]:
            lines.append(f"  error:     {d['exceptionType']}" + (f": {d['exceptionMessage']}" if d["exceptionMessage"] else ""))
        if d["raisedAt"]:
            lines.append(f"  raised at: {d['raisedAt']}")
    else:
        lines.append(f"  error:     {d['error']}")
    if d["timestamp"]:
        lines.append(f"  event at:  {d['timestamp']}")
    lines.append(f"  dead at:   {d['deadAt']} after {d['attempts']} attempt{'s' if d['attempts'] != 1 else ''}")
    print("\n".join(lines), flush=True)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    queue = SQLiteQueue(_open_existing(args.db))
    if args.requeue:
        print(f"requeued {queue.requeue_dead_letters()} dead-lettered events")
        return 0
    items = queue.dead_letters()
    if not items:
        print(f"no dead letters in {args.db}", file=sys.stderr)
        return 0
    for i, item in enumerate(items):
        described = describe_dead_letter(item)
        if args.json:
            print(json.dumps(described), flush=True)
            continue
        if i:
            print()
        _print_dead_letter(described)
    if not args.json:
        print(f"\n{len(items)} dead letter{'s' if len(items) != 1 else ''}; once the handler is fixed: "
              f"{_prog()} dead-letters --requeue --db {args.db}", file=sys.stderr)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"dtconnector {version('dtconnector')}"
    except PackageNotFoundError:  # run from a copied folder, not installed
        return "dtconnector (not installed: version unknown)"


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks."""


def _command(sub, name: str, summary: str, example: str, func) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, its options with defaults, and an example."""
    parser = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                            epilog=f"example:\n  {example}", formatter_class=_Help)
    parser.set_defaults(func=func)
    return parser


DB_HELP = "the receiver's SQLite file (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dtconnector",
        description=__doc__.split("\n\n")[0],
        epilog="Start with `make run` (or `dtconnector serve --dev`); `dtconnector <command> --help` "
        "lists a command's options and defaults.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    serve = _command(
        sub, "serve", "run the local receiver: the HTTP endpoint and the worker, on one SQLite file",
        "DT_HANDLERS=handlers dtconnector serve --dev   # handlers.py in the current folder\n\n"
        "environment: DT_SIGNATURE_SECRET (the connector's secret), DT_HANDLERS (your modules, found in the\n"
        "current folder first), DT_LOG_LEVEL, and the DT_* settings in the README's Configuration table",
        cmd_serve,
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port (default: %(default)s; 0 picks a free one)")
    serve.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)
    serve.add_argument("--dev", action="store_true",
                       help=f"when DT_SIGNATURE_SECRET is not set, generate (once) and use a development secret "
                       f"in {DEV_SECRET_FILE} (default: off)")
    serve.add_argument("--secret-file", default=DEV_SECRET_FILE, help=argparse.SUPPRESS)

    state = _command(
        sub, "state", "print the latest event per device and event type, as JSON",
        "dtconnector state --device emu0123456789abcdefghij", cmd_state,
    )
    state.add_argument("--device", metavar="ID", help="only this device (default: every device)")
    state.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)

    from .stats import add_stats_parser

    add_stats_parser(sub)

    dead = _command(
        sub, "dead-letters",
        "list events whose handlers kept failing (handler, exception, where it was raised), or --requeue them",
        "dtconnector dead-letters          # then fix the handler, restart serve, and:\n"
        "  dtconnector dead-letters --requeue\n\n"
        "--json prints one object per line: eventId, eventType, deviceId, timestamp (the event's),\n"
        "deadAt, attempts, handler, exceptionType, exceptionMessage, raisedAt (file:line), error (as stored).\n"
        "With none, `no dead letters` goes to stderr and the exit status is 0.",
        cmd_dead_letters,
    )
    dead.add_argument("--json", action="store_true", help="one JSON object per dead letter and line (default: text)")
    dead.add_argument("--requeue", action="store_true",
                      help="put every dead letter back on the queue, for a fixed handler (default: only list)")
    dead.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)

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
        # The reader went away (`dtconnector dead-letters | head -1`): it has what it
        # wanted, so this is success, quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again (Python's docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
