"""cfn-lint over the AWS templates, run once per test worker for all of them.

A cfn-lint run costs seconds (it loads CloudFormation's whole resource schema), so the tests
that lint share one run over both templates and over a copy of each with a property
CloudFormation does not know (proof that the lint would catch a broken template)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
TEMPLATES = {"template": ROOT / "aws_lambda" / "template.yaml", "direct": ROOT / "aws_lambda" / "template-direct.yaml"}
BOGUS = "Bogus"


def broken(text: str) -> str:
    """The template with an unknown property on the event queue."""
    return text.replace("VisibilityTimeout: 360", f"VisibilityTimeout: 360\n      {BOGUS}: 1", 1)


@functools.cache
def _findings() -> dict[str, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        for name, path in TEMPLATES.items():
            files[name] = path
            files[f"{name}-broken"] = Path(tmp) / f"{name}-broken.yaml"
            files[f"{name}-broken"].write_text(broken(path.read_text()))
        result = subprocess.run(
            [str(CFN_LINT), "--format", "json", "--", *map(str, files.values())],
            capture_output=True, text=True, timeout=300,
        )
        try:
            matches = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"cfn-lint did not run (exit {result.returncode}): {result.stderr[-2000:]}") from None
    by_file = {str(path): name for name, path in files.items()}
    out: dict[str, list[dict]] = {name: [] for name in files}
    for match in matches:
        out[by_file[match["Filename"]]].append(match)
    return out


def findings(name: str) -> list[dict]:
    """Every match cfn-lint reports (errors, warnings and informational) for `name`: a key of
    TEMPLATES, or that key plus ``-broken``."""
    if not CFN_LINT.exists():
        pytest.skip(f"cfn-lint is not installed next to {sys.executable} (pip install -e '.[test]')")
    return _findings()[name]


def described(matches: list[dict]) -> str:
    return "\n".join(f"{m['Rule']['Id']} {m['Location']['Path']}: {m['Message']}" for m in matches)
