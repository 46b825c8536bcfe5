"""The local receiver's `dtconnector` subcommands: serve, worker, state, stats, dead-letters.

Each is a parser (``add_<name>_parser``, named in `dtconnector.cli.COMMANDS`) and a
``cmd_<name>`` run with its arguments. The work is elsewhere in this package: `serve.py`
runs the processes, `sqlite_store.py` reads the database, `stats.py` reads and prints a
receiver's metrics, `retention.py` its store's size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.times import rfc3339_ns
from dtconnector.installation import command_name

from . import stats
from .app import DEFAULT_DB
from .sqlite_store import Database, SQLiteQueue, SQLiteStateStore

DEV_SECRET_FILE = ".dtconnector/dev-secret"


def cmd_serve(args: argparse.Namespace) -> int:
    """A web process and a worker process, supervised (`local_receiver.serve`)."""
    from . import serve

    return serve.run(args, command_name())


def cmd_worker(args: argparse.Namespace) -> int:
    """The worker process alone, for a receiver mounted in your own service."""
    from . import serve

    return serve.run_worker(args)


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
    out.update(deadAt=rfc3339_ns(int(item["deadAt"] * 1e9), digits=0), attempts=item["attempts"])
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
              f"{command_name()} dead-letters --requeue --db {args.db}", file=sys.stderr)
    return 0



def cmd_stats(args: argparse.Namespace) -> int:
    import time

    from .retention import store_report

    want_metrics = args.url is not None or args.db is None
    want_store = args.db is not None or args.url is None
    url = args.url or stats.DEFAULT_URL
    result: dict = {}
    status = 0
    if want_store:
        result["store"] = store_report(_open_existing(args.db or DEFAULT_DB)).to_dict(time.time())
    if want_metrics:
        try:
            text = stats.fetch(url)
        except OSError as exc:
            print(f"dtconnector: cannot read {url.rstrip('/')}/metrics ({exc}); is `dtconnector serve` running?",
                  file=sys.stderr)
            status = 1
        else:
            result["metrics"] = text
    if args.json:
        if "metrics" in result:
            result["metrics"] = {name: [[labels, value] for labels, value in samples]
                                 for name, samples in stats.parse(result["metrics"]).items()}
        print(json.dumps(result, indent=2, sort_keys=True))
        return status
    if "metrics" in result:
        stats.print_metrics(result["metrics"])
    if "store" in result:
        stats.print_store(result["store"])
    return status


# --- parsers (named in dtconnector.cli.COMMANDS) -------------------------------------------


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks."""


def _command(sub, name: str, summary: str, example: str, func, description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, its options with defaults, and an example."""
    parser = sub.add_parser(name, help=summary, description=description or summary[0].upper() + summary[1:] + ".",
                            epilog=f"example:\n  {example}", formatter_class=_Help)
    parser.set_defaults(func=func)
    return parser


DB_HELP = "the receiver's SQLite file (default: %(default)s)"


def add_serve_parser(sub, summary: str) -> None:
    serve = _command(
        sub, "serve", summary,
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


def add_worker_parser(sub, summary: str) -> None:
    worker = _command(sub, "worker", summary, "DT_HANDLERS=handlers dtconnector worker --db .dtconnector/events.db",
                      cmd_worker)
    worker.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)


def add_state_parser(sub, summary: str) -> None:
    state = _command(sub, "state", summary, "dtconnector state --device emu0123456789abcdefghij", cmd_state)
    state.add_argument("--device", metavar="ID", help="only this device (default: every device)")
    state.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)


def add_stats_parser(sub, summary: str) -> None:
    parser = _command(sub, "stats", summary, "dtconnector stats --db .dtconnector/events.db --json", cmd_stats,
                      description="A running receiver's metrics (--url) and its store's size (--db); neither: both.")
    parser.add_argument("--url", help=f"the running receiver's address (default: {stats.DEFAULT_URL})")
    parser.add_argument("--db", metavar="PATH", help=f"the receiver's SQLite file (default: {DEFAULT_DB})")
    parser.add_argument("--json", action="store_true", help="one JSON object (default: text)")


def add_dead_letters_parser(sub, summary: str) -> None:
    dead = _command(
        sub, "dead-letters", summary,
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
