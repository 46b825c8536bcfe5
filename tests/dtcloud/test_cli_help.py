"""`--help` of send, backfill, stream and connector: every option with its default, one example;
one duration syntax for every time option (core/times.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.times import format_duration, parse_duration, parse_rfc3339, parse_when, rfc3339
from dtconnector.cli import BY_NAME, build_parser

REPO = Path(__file__).resolve().parents[2]
COMMANDS = [("send",), ("backfill",), ("stream",), ("connector",)] + [
    ("connector", a) for a in ("apply", "list", "show", "enable", "disable", "sync", "delete", "metrics", "status",
                               "wire")]
TIME_OPTIONS = [("send", "--timeout"), ("send", "--max-age"), ("send", "--retry-base"), ("send", "--retry-max"),
                ("backfill", "--timeout"), ("backfill", "--max-age"), ("stream", "--ping-interval"),
                ("stream", "--duration"), ("connector", "wire", "--wait")]
REQUIRED_ARGS = {"send": [], "backfill": ["--since", "1d", "--url", "http://x/"], "stream": [],
                 ("connector", "wire"): ["--url", "https://x/"]}


def subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser(load=BY_NAME)
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_says_its_default_and_the_help_has_an_example(path):
    parser = subparser(*path)
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
               and not a.required and "default" not in (a.help or "")]
    assert missing == [], f"{' '.join(path)}: options whose help names no default: {missing}"
    assert "example:\n  dtconnector " in (parser.epilog or ""), f"{' '.join(path)} --help has no example"
    hidden = [a.option_strings for a in parser._actions if a.help == argparse.SUPPRESS]
    assert hidden == []


def test_stream_duration_is_documented_in_the_real_help():
    out = subprocess.run([sys.executable, "-m", "dtconnector", "stream", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--duration DURATION" in out.stdout and "until Ctrl-C" in out.stdout
    assert "example:" in out.stdout and "12h" in out.stdout  # the one duration syntax, spelled out


@pytest.mark.parametrize("option", TIME_OPTIONS, ids=" ".join)
@pytest.mark.parametrize("text,seconds", [("600", 600), ("600s", 600), ("10m", 600), ("12h", 43200),
                                          ("3d", 259200), ("500ms", 0.5), ("1.5h", 5400)])
def test_every_time_option_takes_the_same_durations(option, text, seconds):
    *path, flag = option
    key = path[0] if len(path) == 1 else tuple(path)
    args = build_parser(load=BY_NAME).parse_args([*path, *REQUIRED_ARGS.get(key, []), flag, text])
    assert getattr(args, flag.lstrip("-").replace("-", "_")) == seconds


def test_a_bad_duration_is_a_usage_error_naming_the_syntax(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser(load=BY_NAME).parse_args(["send", "--max-age", "12 hours"])
    assert exit_.value.code == 2
    assert "not a duration: '12 hours' (seconds, or a number with ms, s, m, h or d" in capsys.readouterr().err


def test_durations_and_times():
    assert [parse_duration(t) for t in ("0", ".5", "90", "90s", "2m", "1h", "1d")] == [0, 0.5, 90, 90, 120, 3600,
                                                                                      86400]
    for bad in ("", "-5", "5x", "inf", "nan", "1e9999", "5 h m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(s) for s in (43200, 600, 90, 0.6, 172800)] == ["12h", "10m", "90s", "0.6s", "2d"]
    ns = parse_rfc3339("2026-03-01T12:00:00.123456789Z")
    assert ns == datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert rfc3339(ns) == "2026-03-01T12:00:00.123456Z" and parse_rfc3339("2026-03-01T12:00:00") == ns.replace(
        microsecond=0)
    assert parse_rfc3339("2026-03-01T13:00:00+01:00") == ns.replace(microsecond=0)
    for bad in (12345, None, "yesterday", "2026-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert parse_when("3d", now) == now - timedelta(days=3) and parse_when("600", now) == now - timedelta(seconds=600)
    assert parse_when("2026-02-01T00:00:00Z", now) == datetime(2026, 2, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="RFC 3339 like"):
        parse_when("last week", now)


def test_the_dt_api_stand_in_publishes_by_default():
    out = subprocess.run([sys.executable, "-m", "emulator.dtapi", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "(default: 5s)" in out.stdout and "0 publishes none" in out.stdout


def test_without_the_dt_extra_the_hint_is_the_command_that_works_here(tmp_path):
    """`requests` missing: one line with the install command for a source checkout, run from it."""
    code = ("import sys; sys.modules['requests'] = None; from dtconnector.cli import main; "
            "sys.exit(main(['connector', 'list']))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "DT_PROJECT_ID": "p", "DT_SERVICE_ACCOUNT_KEY_ID": "k",
           "DT_SERVICE_ACCOUNT_SECRET": "s", "DT_SERVICE_ACCOUNT_EMAIL": "e"}
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv in this checkout")
    out = subprocess.run([".venv/bin/python", "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("dtconnector connector: the `dt` extra is not installed (it needs `requests`): "
                                  ".venv/bin/python -m pip install -e '.[dt]'")
