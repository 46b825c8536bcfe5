"""Each bundle's requirements.txt is a lock of pyproject.toml's ranges (`make lock`): exact
versions with hashes, its recorded inputs equal to what pyproject.toml declares now, and
every pin inside the declared range. Offline: this reads the files, it resolves nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import lock  # noqa: E402


@pytest.mark.parametrize("bundle", lock.BUNDLES, ids=[b.folder for b in lock.BUNDLES])
def test_each_bundle_lock_matches_pyproject(bundle):
    assert lock.problems(bundle) == []
    inputs, pins, bad = lock.read_lock(bundle.lock.read_text())
    assert inputs and pins and not bad
    assert all(pin.hashes and all(h.startswith("sha256:") for h in pin.hashes) for pin in pins)


def test_the_check_command_passes_on_the_committed_locks():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


def _project(**extras) -> dict:
    project = lock._pyproject()
    return {**project, "optional-dependencies": {**project["optional-dependencies"], **extras}}


def test_a_range_changed_in_pyproject_without_relocking_is_reported():
    gcp = next(b for b in lock.BUNDLES if b.folder == "gcp_function")
    project = _project(gcp=["functions-framework>=3.5,<4", "google-cloud-firestore>=2.16,<3",
                            "google-cloud-pubsub>=2.21,<3", "requests>=2"])
    found = lock.problems(gcp, project)
    assert any("was locked from" in p and "requests>=2" in p for p in found), found


def test_a_pin_outside_the_declared_range_is_reported():
    aws = next(b for b in lock.BUNDLES if b.folder == "aws_lambda")
    text = aws.lock.read_text()
    _, pins, _ = lock.read_lock(text)
    [pyjwt] = [p for p in pins if p.name == "pyjwt"]
    edited = text.replace(f"pyjwt=={pyjwt.version} ", "pyjwt==1.7.1 ")
    assert edited != text
    assert lock.problems(aws, text=edited) == [
        "aws_lambda/bundle/requirements.txt: PyJWT==1.7.1 is outside the declared 'PyJWT[crypto]>=2.10,<3'"
    ]


def test_an_unpinned_or_unhashed_line_is_reported():
    aws = next(b for b in lock.BUNDLES if b.folder == "aws_lambda")
    text = aws.lock.read_text() + "requests>=2\nidna==3.10\n"
    found = lock.problems(aws, text=text)
    assert "aws_lambda/bundle/requirements.txt: 'requests>=2' is not one exact version with hashes" in found
    assert "aws_lambda/bundle/requirements.txt: 'idna==3.10' is not one exact version with hashes" in found


def test_a_declared_package_missing_from_the_lock_is_reported():
    heroku = next(b for b in lock.BUNDLES if b.folder == "heroku")
    text = heroku.lock.read_text()
    start = text.index("\nredis==")
    end = text.index("\n", text.index("\n", start + 1) + 1)
    while text[end + 1:end + 5] == "    ":  # its hash and annotation lines
        end = text.index("\n", end + 1)
    found = lock.problems(heroku, text=text[:start] + text[end:])
    assert any("redis (declared 'redis" in p and "is not pinned" in p for p in found), found


def test_make_lock_is_the_documented_command():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nlock: " in makefile and "scripts/lock.py" in makefile
    assert "make lock" in (ROOT / "README.md").read_text()


def test_pyproject_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    """A `license = {text = ...}` table made setuptools warn three times on every install."""
    from packaging.requirements import Requirement

    from tests.pyproject import pyproject

    data = pyproject()
    assert data["project"]["license"] == "MIT"
    [setuptools] = [Requirement(r) for r in data["build-system"]["requires"] if Requirement(r).name == "setuptools"]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")  # PEP 639 from 77
