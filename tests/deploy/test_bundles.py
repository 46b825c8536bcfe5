"""`make bundle-<p> DEST=dir`: every platform's folder comes with a README.md of the next
steps for that cloud (settings, deploy, wiring DT, logs, metrics, dead letters), printed
too; its handlers.py names only settings that platform has; a wrong platform or a missing
DEST is one line listing what is valid, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import bundle  # noqa: E402

#: The command that deploys this folder (or creates what it needs), per platform.
DEPLOY = {
    "aws": "sam deploy --region <region> --parameter-overrides SignatureSecretArn=",
    "gcp": "DT_SOURCE_DIR={dest} DT_SIGNATURE_SECRET='<the connector's secret>' make deploy-gcp",
    "azure": "func azure functionapp publish <app name> --python --build remote",
    "ibm": "ibmcloud ce fn update --name dtconnector-ingest --build-source .",
    "heroku": "git push --force heroku main",
}


def _make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The real `make`, taking the virtual environment as it is (-o: not remade)."""
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.run-deps", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", list(bundle.PLATFORMS))
def test_each_bundle_has_and_prints_its_next_steps(tmp_path, name):
    dest = tmp_path / f"dtconnector-{name}"
    result = _make(f"bundle-{name}", f"DEST={dest}")
    assert result.returncode == 0, result.stderr
    readme = (dest / "README.md").read_text()
    assert result.stdout == f"Wrote {dest}. Next steps (also in its README.md):\n\n{readme}"
    assert "{{" not in readme and "}}" not in readme
    headings = re.findall(r"^## (\d)\. (.+)$", readme, re.M)
    assert [n for n, _ in headings] == ["1", "2", "3", "4", "5"]
    assert [h for _, h in headings][:1] == ["Your handlers"] and "Logs, metrics, dead letters" in headings[-1][1]
    assert DEPLOY[name].format(dest=dest) in readme
    assert f"bash {ROOT}/scripts/wire-dt.sh <URL>" in readme  # how to wire DT, with this checkout's path
    assert f"cd {dest} && python3 -c 'import handlers, core; print(core.registry.summary())'" in readme


@pytest.mark.parametrize("name", list(bundle.PLATFORMS))
def test_the_readmes_handler_check_runs_in_the_bundle(tmp_path, name):
    dest = bundle.build(name, tmp_path / "b")
    result = subprocess.run([sys.executable, "-c", "import handlers, core; print(core.registry.summary())"],
                            cwd=dest, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "'handlers.record_temperature': ['temperature']" in result.stdout


@pytest.mark.parametrize("name", list(bundle.PLATFORMS))
def test_handlers_py_names_only_settings_this_bundle_has(tmp_path, name):
    dest = bundle.build(name, tmp_path / "b")
    handlers = (dest / "handlers.py").read_text()
    assert bundle.PLATFORMS[name].handlers_setting in handlers
    code = "\n".join(p.read_text() for p in dest.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".json", "")
                     and p.name not in ("handlers.py", "README.md"))
    named = set(re.findall(r"\bDT_[A-Z_]+\b", handlers))
    assert named and all(name_ in code for name_ in named), named  # DT_HANDLERS: read by core in every bundle
    assert "bundle's settings" not in handlers  # (GCP's bundle has no settings file)


def test_an_unknown_platform_lists_the_valid_ones():
    result = _make("bundle-foo", "DEST=/tmp/never-written")
    assert result.returncode == 2
    assert "bundle: unknown platform 'foo'; one of: aws, gcp, azure, ibm, heroku" in result.stderr
    assert "Usage:" not in result.stdout + result.stderr  # not the script's docstring
    assert not Path("/tmp/never-written").exists()


def test_a_missing_dest_says_how_to_call_it():
    result = _make("bundle-gcp")
    assert result.returncode == 2
    assert "bundle: usage: make bundle-gcp DEST=dir" in result.stderr


def test_a_non_empty_dest_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "aws", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (2, f"bundle: {tmp_path} exists and is not empty\n")
