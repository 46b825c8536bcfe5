"""Argument types shared by the DT commands (`connector`, `backfill`, `stream`) and `send`.

Headers come in three forms so that a secret header value (often an API key a proxy checks)
never has to be typed where `ps` and the shell history see it:

    --header NAME:VALUE        the value on the command line (fine for what is not secret)
    --header-file NAME:PATH    the value is the content of PATH (trailing newline removed)
    --header-env NAME:VAR      the value is the environment variable VAR
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 header field name
MAX_HEADER_FILE_BYTES = 16 * 1024


def csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _split(option: str, text: str, what: str) -> tuple[str, str]:
    name, sep, rest = text.partition(":")
    name, rest = name.strip(), rest.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{option} wants NAME:{what} with a header name before the ':'")
    return name, rest


def _checked(option: str, name: str, value: str) -> tuple[str, str]:
    if any(c in value for c in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"{option} {name}: the value has a line break or NUL")
    return name, value


def header(text: str) -> tuple[str, str]:
    """`--header NAME:VALUE`."""
    name, value = _split("--header", text, "VALUE")
    return _checked("--header", name, value)


def header_file(text: str) -> tuple[str, str]:
    """`--header-file NAME:PATH`: the value is read from PATH (at most 16 KiB)."""
    name, path = _split("--header-file", text, "PATH")
    try:
        with open(Path(path).expanduser(), "rb") as f:
            raw = f.read(MAX_HEADER_FILE_BYTES + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"--header-file {name}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_HEADER_FILE_BYTES:
        raise argparse.ArgumentTypeError(f"--header-file {name}: {path} is larger than 16 KiB")
    value = raw.decode("utf-8", "replace").rstrip("\r\n")
    if not value:
        raise argparse.ArgumentTypeError(f"--header-file {name}: {path} is empty")
    return _checked("--header-file", name, value)


def header_env(text: str) -> tuple[str, str]:
    """`--header-env NAME:VAR`: the value is the environment variable VAR."""
    name, var = _split("--header-env", text, "VAR")
    value = os.environ.get(var)
    if not value:
        raise argparse.ArgumentTypeError(f"--header-env {name}: the environment variable {var!r} is not set")
    return _checked("--header-env", name, value)


def add_header_options(parser, what: str) -> None:
    """`--header`, `--header-file`, `--header-env`, all into `args.header` (a list of pairs)."""
    parser.add_argument("--header", type=header, action="append", default=[], metavar="NAME:VALUE",
                        help=f"{what} (repeatable; default: none; the value shows in `ps`: use --header-file "
                             "or --header-env for a secret)")
    parser.add_argument("--header-file", type=header_file, action="append", dest="header", metavar="NAME:PATH",
                        help="the same, the value read from the file PATH (default: none)")
    parser.add_argument("--header-env", type=header_env, action="append", dest="header", metavar="NAME:VAR",
                        help="the same, the value read from the environment variable VAR (default: none)")
