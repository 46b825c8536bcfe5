"""`dtconnector`: run the local receiver, inspect its state, and send DT-like events.

    dtconnector serve [--host 127.0.0.1] [--port 8080] [--db PATH] [--dev]
    dtconnector worker [--db PATH]                    (the handlers of a mounted receiver)
    dtconnector state [--device ID] [--db PATH]
    dtconnector dead-letters [--json] [--requeue] [--db PATH]
    dtconnector stats [--url URL] [--db PATH] [--json]  (metrics of a running receiver; store size)
    dtconnector send --url URL [--secret S] ...      (the DT Cloud emulator)
    dtconnector --version
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .app import DEFAULT_DB
from .sqlite_store import Database, SQLiteQueue, SQLiteStateStore

DEV_SECRET_FILE = ".dtconnector/dev-secret"


def cmd_serve(args: argparse.Namespace) -> int:
    """A web process and a worker process, supervised (`local_receiver.serve`)."""
    from . import serve

    return serve.run(args, _prog())


def cmd_worker(args: argparse.Namespace) -> int:
    """The worker process alone, for a receiver mounted in your own service."""
    from . import serve

    return serve.run_worker(args)


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

    worker = _command(
        sub, "worker", "run the handlers of a receiver mounted in your own service (its queue in --db)",
        "DT_HANDLERS=handlers dtconnector worker --db .dtconnector/events.db", cmd_worker,
    )
    worker.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)

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
