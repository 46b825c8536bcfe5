"""The `dtconnector` dispatcher (dtconnector/cli.py): every subcommand listed with its
summary, each one's module imported only when it runs, and a module that cannot be
imported is one line naming what is missing, for that subcommand only."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from dtconnector import installation
from dtconnector.cli import BY_NAME, COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]
DTCONNECTOR = Path(sys.executable).with_name("dtconnector")


def dtconnector(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m dtconnector ARGS`, after `prelude` (e.g. hiding a module)."""
    code = f"import sys, runpy\n{prelude}\nrunpy.run_module('dtconnector', run_name='__main__')\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_help_lists_every_subcommand_with_its_summary():
    assert DTCONNECTOR.exists(), f"the console script is not installed at {DTCONNECTOR}"
    out = subprocess.run([str(DTCONNECTOR), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps the summaries
    for command in COMMANDS:
        assert f"{command.name} {command.summary}" in text, command.name


def test_every_row_adds_the_subcommand_it_names_with_its_summary():
    """A row whose function adds another name, or none, fails here rather than at a user."""
    loaded = subcommands(build_parser(load=BY_NAME))
    helps = {a.dest: a.help for a in loaded._choices_actions}
    for command in COMMANDS:
        parser = loaded.choices[command.name]
        actions = subcommands(parser).choices.values() if parser._subparsers else [parser]  # connector's
        assert all(p.get_default("func") is not None for p in actions), command.name
        assert helps[command.name] == command.summary
        assert parser.prog == f"dtconnector {command.name}"


def test_python_dash_m_dtconnector_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "dtconnector", "--version"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout.startswith("dtconnector ")) == (0, True), out.stderr


def test_a_missing_package_fails_only_its_subcommand_in_one_line():
    hidden = "sys.modules['emulator'] = None"
    out = dtconnector("send", "--url", "http://127.0.0.1:1/", prelude=hidden)
    assert out.returncode == 2
    assert out.stderr == ("dtconnector send: this copy of dtconnector has no `emulator` package (an installed one "
                          "has every subcommand: pip install dtconnector)\n")
    other = dtconnector("state", "--help", prelude=hidden)
    assert other.returncode == 0 and "--device ID" in other.stdout
    listing = dtconnector("--help", prelude=hidden)
    assert listing.returncode == 0 and "send" in listing.stdout


def test_a_missing_dependency_is_one_line_with_the_install_command():
    out = dtconnector("send", "--help", prelude="sys.modules['jwt'] = None")  # PyJWT: emulator.signing needs it
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr == f"dtconnector send: the Python module `jwt` is not installed: {installation.install_hint()}\n"


def test_a_module_that_fails_to_import_is_one_line_too():
    broken = ("class Broken:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'emulator.sender':\n"
              "            raise ImportError('built for another Python')\n"
              "sys.meta_path.insert(0, Broken())")
    out = dtconnector("send", "--help", prelude=broken)
    assert (out.returncode, out.stderr) == (2, "dtconnector send: cannot load emulator.cli: built for another Python\n")


def test_an_unknown_subcommand_lists_the_valid_ones():
    out = dtconnector("sned")
    assert out.returncode == 2
    assert "invalid choice: 'sned' (choose from 'serve', 'worker', 'state'," in out.stderr


@pytest.mark.parametrize("argv0,expected", [
    (str(REPO / "dtconnector" / "__main__.py"), f"{sys.executable} -m dtconnector"),
    ("dtconnector", "dtconnector"),  # found on PATH, as the user typed it
])
def test_hints_name_the_command_as_the_user_called_it(monkeypatch, tmp_path, argv0, expected):
    monkeypatch.chdir(tmp_path)  # so nothing is shortened relative to the current folder
    monkeypatch.setattr(sys, "argv", [argv0])
    assert installation.command_name() == expected


def test_a_console_script_off_path_is_named_by_its_path(monkeypatch, tmp_path):
    script = tmp_path / "venv" / "bin" / "dtconnector"
    script.parent.mkdir(parents=True)
    script.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert installation.command_name() == "venv/bin/dtconnector"
