"""pyproject.toml as the tests read it: `scripts/lock.py`'s reader (tomllib, or the tomli
backport on Python 3.10), not a second one."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from lock import read_pyproject as pyproject  # noqa: E402

__all__ = ["pyproject"]
