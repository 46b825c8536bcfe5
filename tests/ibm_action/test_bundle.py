"""The deployable bundle and the deploy script, checked offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bundle_entry", "__main__.py")
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)
loaded_sdk_at_import = "ibmcloudant" in sys.modules
reply = entry.main({"__ce_method": "POST", "__ce_headers": {}, "__ce_body": ""})
import core, ibm_action.__main__, ibm_action.worker, handlers
print(json.dumps({
    "core": core.__file__,
    "entry": sys.modules["ibm_action.__main__"].__file__,
    "worker": ibm_action.worker.__file__,
    "handlers": handlers.__file__,
    "main_is_entry_main": entry.main is ibm_action.__main__.main,
    "sdk_at_import": loaded_sdk_at_import,
    "reply": reply,
}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    dest = tmp_path_factory.mktemp("ibm") / "bundle"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "ibm_action", str(dest)], check=True, capture_output=True)
    return dest


def test_bundle_layout(bundle):
    for name in ("__main__.py", "requirements.txt", "Dockerfile", "handlers.py", "core/receiver.py",
                 "ibm_action/__main__.py", "ibm_action/worker.py", "ibm_action/cloudant.py"):
        assert (bundle / name).is_file(), name
    for absent in ("ibm_action/deploy.sh", "ibm_action/README.md", "ibm_action/bundle"):
        assert not (bundle / absent).exists(), absent
    requirements = (bundle / "requirements.txt").read_text()
    assert "ibmcloudant" in requirements and "PyJWT" in requirements
    assert 'ENTRYPOINT ["python", "-m", "ibm_action.worker"]' in (bundle / "Dockerfile").read_text()


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "CLOUDANT_", "PYTHON"))}
    env["DT_SIGNATURE_SECRET"] = "bundle-test-secret-0123456789abcdef"
    return env


def test_entry_point_imports_from_the_bundle_in_a_clean_interpreter(bundle):
    # -I: no PYTHONPATH, no user site, no cwd on the path; only the bundle is prepended.
    code = f"import sys; sys.path.insert(0, {str(bundle)!r})\n" + PROBE
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=bundle, env=_clean_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("core", "entry", "worker", "handlers"):
        assert Path(result[key]).resolve().is_relative_to(bundle.resolve()), (key, result[key])
    assert result["main_is_entry_main"] is True
    assert result["sdk_at_import"] is False  # the Cloudant SDK loads on the first request
    # No Cloudant configured in this interpreter: a clean 503 naming the variable.
    assert result["reply"]["statusCode"] == 503
    assert "CLOUDANT_URL" in result["reply"]["body"]["reason"]


def test_worker_cli_runs_from_the_bundle(bundle):
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys, runpy; sys.path.insert(0, {str(bundle)!r}); "
         "sys.argv = ['worker', '--once']; runpy.run_module('ibm_action.worker', run_name='__main__')"],
        cwd=bundle, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2  # a configuration error, reported without a traceback
    assert "CLOUDANT_URL is not set" in out.stderr
    assert "Traceback" not in out.stderr


def test_deploy_script_is_valid_bash_and_stops_without_the_cli(tmp_path):
    script = ROOT / "ibm_action" / "deploy.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm", "cat"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    bash = shutil.which("bash")
    out = subprocess.run([bash, str(script)], env={"PATH": str(bin_dir)}, capture_output=True, text=True)
    assert out.returncode == 2
    assert "IBM Cloud CLI is not installed" in out.stderr


def test_deploy_script_names_every_required_setting(tmp_path):
    """With a fake `ibmcloud` that succeeds, the script stops on each missing setting."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ibmcloud"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = str(ROOT / "ibm_action" / "deploy.sh")
    out = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "DT_SIGNATURE_SECRET" in out.stderr
    env["DT_SIGNATURE_SECRET"] = "s"
    out = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "CLOUDANT_URL" in out.stderr
    env["CLOUDANT_URL"] = "https://example.invalid"
    out = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "CLOUDANT_APIKEY" in out.stderr


# A recording `ibmcloud`: every `get` of a resource says "not found"; `fn runtimes` answers
# with IBM's documented example (https://cloud.ibm.com/docs/codeengine?topic=codeengine-cli),
# `--all` adds a deprecated python-3.9; the function URL comes from the jsonpath output.
FAKE_IBMCLOUD = """#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *"fn runtimes --all"*) printf 'Name ID Family Default\\nPython 3.9 python-3.9 python false\\nPython 3.11 python-3.11 python true\\nPython 3.13 python-3.13 python false\\n' ;;
  *"fn runtimes"*) printf 'Name ID Family Default\\nPython 3.11 python-3.11 python true\\nNode.js 22 nodejs-22 nodejs true\\nPython 3.13 python-3.13 python false\\n' ;;
  *"--output jsonpath={{.endpoint}}"*) echo https://dtconnector-ingest.abc.eu-de.codeengine.appdomain.cloud ;;
  *" get "*) exit 1 ;;
esac
exit 0
"""


def _ibm_env(tmp_path, **extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "ibmcloud"
    fake.write_text(FAKE_IBMCLOUD.format(log=tmp_path / "calls.log"))
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "DT_SIGNATURE_SECRET": "s", "CLOUDANT_URL": "https://example.invalid",
            "CLOUDANT_APIKEY": "k", "PYTHON": sys.executable, "DT_TODAY": "2026-11-29", **extra}


@pytest.mark.parametrize("runtime, message", [
    ("python-3.9", "is deprecated on Code Engine"),
    ("python-3.7", "is not offered by Code Engine"),
    ("python-3.11", "reached end of life on 2026-10-31"),
])
def test_deploy_stops_on_a_deprecated_gone_or_ended_runtime(tmp_path, runtime, message):
    env = _ibm_env(tmp_path, DT_IBM_RUNTIME=runtime)
    out = subprocess.run(["bash", str(ROOT / "ibm_action" / "deploy.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert " fn create " not in (tmp_path / "calls.log").read_text()


def test_deploy_script_issues_code_engine_commands(tmp_path):
    """A recording fake `ibmcloud` (every `get` says "not found"): the commands that create
    the secret, the function and the daemon job, with secrets only in the env file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake = bin_dir / "ibmcloud"
    fake.write_text(FAKE_IBMCLOUD.format(log=log))
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DT_SIGNATURE_SECRET": "top-secret-value",
        "CLOUDANT_URL": "https://example.invalid",
        "CLOUDANT_APIKEY": "apikey-value",
        "PYTHON": sys.executable,
        "DT_TODAY": "2026-11-29",
    }
    out = subprocess.run(["bash", str(ROOT / "ibm_action" / "deploy.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    calls = log.read_text()
    assert "ce secret create --name dtconnector-secrets --from-env-file" in calls
    # the newest Python `fn runtimes` lists (IBM's example output: python-3.11 and python-3.13)
    assert "ce fn create --name dtconnector-ingest --runtime python-3.13 --build-source" in calls
    assert "ce fn get --name dtconnector-ingest --output jsonpath={.endpoint}" in calls
    assert "https://dtconnector-ingest.abc.eu-de.codeengine.appdomain.cloud" in out.stdout
    assert "ce job create --name dtconnector-worker --build-source" in calls and "--mode daemon" in calls
    assert "ce jobrun submit --name dtconnector-worker-daemon --job dtconnector-worker" in calls
    assert "top-secret-value" not in calls and "apikey-value" not in calls
