"""The `dtconnector` command: one dispatcher for every part of the project.

Each subcommand lives with the code it drives; this table names the function that adds its
parser, and nothing else is imported until that subcommand runs. So `dtconnector --help`
and `dtconnector state` never load the emulator or the DT API client, and a subcommand
whose module cannot be imported (an optional dependency not installed) fails alone, in one
line naming the install command; the other subcommands are unaffected.

To add a subcommand: a function ``add_<name>_parser(subparsers, summary)`` beside its code
(it adds the parser, its options with their defaults, one example, and `set_defaults(func=…)`),
and one row in `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Iterable, NamedTuple

from .installation import install_hint


class Command(NamedTuple):
    name: str
    #: "module:function" adding the subcommand's parser; imported only when it runs.
    parser: str
    #: The line `dtconnector --help` shows for it (and its own `--help`'s description when
    #: it has no longer one).
    summary: str


COMMANDS = (
    Command("serve", "local_receiver.commands:add_serve_parser",
            "run the local receiver: the HTTP endpoint and the worker, on one SQLite file"),
    Command("worker", "local_receiver.commands:add_worker_parser",
            "run the handlers of a receiver mounted in your own service (its queue in --db)"),
    Command("state", "local_receiver.commands:add_state_parser",
            "print the latest event per device and event type, as JSON"),
    Command("stats", "local_receiver.commands:add_stats_parser",
            "a receiver's metrics (since it started) and its store's size"),
    Command("dead-letters", "local_receiver.commands:add_dead_letters_parser",
            "list events whose handlers kept failing (handler, exception, where it was raised), or --requeue them"),
    # The emulator is a test double: product code imports it nowhere else, and only here
    # because `send` is how a user tries a receiver (tests/dtcloud/test_product_imports.py).
    Command("send", "emulator.cli:add_send_parser",
            "deliver DT-like signed events to a URL, like DT Cloud does (the emulator)"),
    Command("connector", "dtcloud.cli:add_connector_parser",
            "manage the project's DT Data Connector (needs the `dt` extra)"),
    Command("backfill", "dtcloud.cli:add_backfill_parser",
            "re-deliver events from DT's history (after an outage)"),
    Command("stream", "dtcloud.cli:add_stream_parser",
            "follow DT's event stream into the local receiver (no tunnel)"),
)
BY_NAME = {c.name: c for c in COMMANDS}

#: Ours: a ModuleNotFoundError naming one of these means this copy lacks the package.
OWN_PACKAGES = {c.parser.partition(".")[0] for c in COMMANDS} | {"core", "dtconnector"}


class MissingModule(Exception):
    """A subcommand's module could not be imported: one line for the user, exit 2."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"dtconnector {version('dtconnector')}"
    except PackageNotFoundError:  # run from a copied folder, not installed
        return "dtconnector (not installed: version unknown)"


def _load(command: Command):
    """The function adding `command`'s parser, its module imported now."""
    module, _, function = command.parser.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing in OWN_PACKAGES:  # e.g. a copy of the repository without emulator/
            raise MissingModule(f"this copy of dtconnector has no `{missing}` package (an installed one has "
                                f"every subcommand: pip install dtconnector)") from None
        # Optional extras are imported where they are used, with their own hint (the `dt`
        # extra: dtcloud.client); what a module needs to load is a dependency of the project.
        raise MissingModule(f"the Python module `{missing}` is not installed: {install_hint()}") from None
    except ImportError as exc:  # installed but unusable (a compiled module built for another Python, say)
        raise MissingModule(f"cannot load {module}: {exc}") from None


def build_parser(load: Iterable[str] = ()) -> argparse.ArgumentParser:
    """The `dtconnector` parser: every subcommand listed with its summary, and those named
    in `load` (their modules imported now) with their own options."""
    parser = argparse.ArgumentParser(
        prog="dtconnector",
        description="Receive DT sensor events on one machine, inspect them, send DT-like events, and manage "
                    "DT's Data Connectors.",
        epilog="Start with `make run` (or `dtconnector serve --dev`); `dtconnector <command> --help` "
        "lists a command's options and defaults.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    wanted = set(load)
    for command in COMMANDS:
        if command.name in wanted:
            _load(command)(sub, command.summary)
        else:  # listed, not loaded: enough for `dtconnector --help` and a usage error
            sub.add_parser(command.name, help=command.summary, add_help=False)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The subcommand `argv` names: its first word that is not an option (the top-level
    options, --help and --version, take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = _command_in(argv)
    try:
        parser = build_parser(load=[name] if name in BY_NAME else [])
    except MissingModule as exc:
        print(f"dtconnector {name}: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`dtconnector dead-letters | head -1`): it has what it
        # wanted, so this is success, quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again (Python's docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
