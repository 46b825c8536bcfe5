"""`dtconnector`: run the local receiver, inspect its state, and send DT-like events.

    dtconnector serve [--host 127.0.0.1] [--port 8080] [--db PATH] [--dev]
    dtconnector worker [--db PATH]                    (the handlers of a mounted receiver)
    dtconnector state [--device ID] [--db PATH]
    dtconnector dead-letters [--requeue] [--db PATH]
    dtconnector stats [--url URL] [--db PATH] [--json]  (metrics of a running receiver; store size)
    dtconnector send --url URL [--secret S] ...      (the DT Cloud emulator)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
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

    worker = sub.add_parser("worker", help="run the handlers for a receiver mounted in your own service")
    worker.add_argument("--db", default=DEFAULT_DB)
    worker.set_defaults(func=cmd_worker)

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
