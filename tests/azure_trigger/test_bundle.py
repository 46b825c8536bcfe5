"""The deployable folder: built by scripts/bundle.py, imported from a clean interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = r"""
import json, sys
import function_app
import azure_trigger.function_app as entry
import core
names = sorted(f.get_function_name() for f in function_app.app.get_functions())
print(json.dumps({
    "same_app": function_app.app is entry.app,
    "names": names,
    "function_app": function_app.__file__,
    "entry": entry.__file__,
    "core": core.__file__,
    "lazy": [m for m in ("azure.data.tables", "azure.storage.queue", "jwt", "core.receiver", "core.worker") if m in sys.modules],
}))
"""

_HANDLERS = r"""
import os
os.environ["DT_HANDLERS"] = "handlers"
from core.config import Settings
from core.handlers import registry
registry.load(Settings.from_env().handler_modules)
import handlers
print(handlers.__file__)
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("azure-bundle") / "app"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "azure_trigger", str(dest)], check=True)
    return dest


def _run(bundle: Path, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(bundle)!r})\n{code}"],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_bundle_has_what_the_functions_host_needs_at_its_root(bundle):
    for name in ("function_app.py", "host.json", "requirements.txt", ".funcignore", "local.settings.json.example", "handlers.py"):
        assert (bundle / name).is_file(), name
    assert (bundle / "core" / "receiver.py").is_file()
    assert (bundle / "azure_trigger" / "function_app.py").is_file()
    for absent in ("bundle", "deploy.sh", "deploy-direct.sh", "README.md"):
        assert not (bundle / "azure_trigger" / absent).exists(), absent
    assert not (bundle / "local.settings.json").exists()  # never ship local secrets


def test_bundle_entry_imports_from_the_bundle_in_a_clean_interpreter(bundle):
    info = json.loads(_run(bundle, _PROBE))
    assert info["same_app"] is True
    assert info["names"] == ["ingest", "process", "sweep"]
    for key in ("function_app", "entry", "core"):
        assert Path(info[key]).resolve().is_relative_to(bundle.resolve()), (key, info[key])


def test_importing_the_app_loads_no_storage_sdk_and_no_jwt(bundle):
    """Cold start: the host imports function_app to index it; SDKs load on first call."""
    assert json.loads(_run(bundle, _PROBE))["lazy"] == []


def test_bundle_example_handlers_load_from_the_bundle(bundle):
    assert Path(_run(bundle, _HANDLERS)).resolve().is_relative_to(bundle.resolve())
