"""pyproject.toml as the tests read it (tomllib from Python 3.11, the tomli backport before)."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())
