"""This installation of dtconnector: how the user calls its command, and how they install
what a command is missing.

Messages that tell the user what to type next (the startup banner's `send` line, a dead
letter's `--requeue` hint, a missing extra) must name a command that works where they are:
`.venv/bin/dtconnector` in a source checkout whose venv is not on PATH, an editable install
rather than PyPI in a checkout. Standard library only, no project imports: the dispatcher
and every command module may import it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: The source checkout this code runs from, if it is one (a pip-installed copy has no
#: pyproject.toml beside its packages).
ROOT = Path(__file__).resolve().parents[1]


def _short(path: Path) -> str:
    """`path` relative to the current folder when it is inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def command_name() -> str:
    """How the user can call `dtconnector` again: `dtconnector` when that is what they ran
    and it is on PATH, else the path they ran (`.venv/bin/dtconnector`), or
    `<python> -m dtconnector` when they ran the package."""
    exe = Path(sys.argv[0])
    if exe.name == "__main__.py" and exe.parent.name == "dtconnector":
        return f"{_short(Path(sys.executable))} -m dtconnector"
    if exe.name == "dtconnector" and exe.exists() and shutil.which("dtconnector") != str(exe.resolve()):
        return _short(exe.resolve())
    return "dtconnector"


def install_hint(extra: str | None = None) -> str:
    """The command that installs dtconnector (with `extra`, e.g. ``dt``) where this code runs:
    in a source checkout an editable install with this very interpreter
    (`.venv/bin/python -m pip install -e '.[dt]'`), else the package from PyPI."""
    spec = f"[{extra}]" if extra else ""
    if not (ROOT / "pyproject.toml").is_file():
        return f"pip install 'dtconnector{spec}'"
    return f"{_short(Path(sys.executable))} -m pip install -e '{_short(ROOT)}{spec}'"
