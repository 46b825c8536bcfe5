"""scripts/deploy-lib.sh: dry-run printing, secret masking, probes, the runtime rule."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "scripts" / "deploy-lib.sh"


def bash(body: str, **env: str) -> subprocess.CompletedProcess:
    script = f"set -euo pipefail\nDEPLOY_NAME=deploy-test\nsource {shlex.quote(str(LIB))}\n{body}\n"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "DRY_RUN", "CLOUDANT_"))}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={**clean, **env})


def printed(stdout: str) -> list[list[str]]:
    return [shlex.split(line[len("DRY-RUN:"):]) for line in stdout.splitlines() if line.startswith("DRY-RUN:")]


def test_dry_run_prints_one_shell_quoted_line_instead_of_running(tmp_path):
    marker = tmp_path / "ran"
    done = bash(f'run touch {marker}\nrun gcloud x "--a=b c" "it\'s" ""', DRY_RUN="1")
    assert done.returncode == 0 and not marker.exists()
    assert printed(done.stdout) == [["touch", str(marker)], ["gcloud", "x", "--a=b c", "it's", ""]]


def test_without_dry_run_the_command_runs(tmp_path):
    marker = tmp_path / "ran"
    done = bash(f"run touch {marker}")
    assert done.returncode == 0 and marker.exists() and "DRY-RUN" not in done.stdout


def test_secrets_and_url_credentials_are_masked():
    done = bash(
        'mask_value "AccountKey=k3y"\n'
        'run az x --secret "$DT_SIGNATURE_SECRET" "S=$CLOUDANT_APIKEY" --c "AccountName=a;AccountKey=k3y" '
        "https://user:pa55@host.example/db",
        DRY_RUN="1", DT_SIGNATURE_SECRET="s3cr3t-value", CLOUDANT_APIKEY="ap1-key",
    )
    [argv] = printed(done.stdout)
    assert argv == ["az", "x", "--secret", "***", "S=***", "--c", "AccountName=a;***", "https://***@host.example/db"]
    for secret in ("s3cr3t-value", "ap1-key", "k3y", "pa55"):
        assert secret not in done.stdout


def test_printing_survives_command_substitution_and_discarded_output():
    done = bash('X=$(query "placeholder" aws sts get-caller-identity)\necho "got $X"\n'
                "run heroku ps >/dev/null 2>&1", DRY_RUN="1")
    assert printed(done.stdout) == [["aws", "sts", "get-caller-identity"], ["heroku", "ps"]]
    assert "got placeholder" in done.stdout


def test_exists_answers_dry_run_existing_and_check_login_never_runs():
    body = "if exists az group show -n g; then echo YES; else echo NO; fi\ncheck_login 'no login' false-cli login"
    assert "NO" in bash(body, DRY_RUN="1").stdout
    assert "YES" in bash(body, DRY_RUN="1", DRY_RUN_EXISTING="1").stdout
    real = bash("check_login 'please log in' false")
    assert real.returncode == 1 and "deploy-test: please log in" in real.stderr


def test_check_runtime_refuses_end_of_life():
    refused = bash("check_runtime ibm python-3.11\necho after", DT_TODAY="2026-11-29")
    assert refused.returncode == 1 and "after" not in refused.stdout
    assert "refusing to deploy on runtime 'python-3.11'" in refused.stderr
    assert bash("check_runtime aws python3.12", DT_TODAY="2026-11-29").returncode == 0


def test_project_python_is_the_given_one_else_the_checkouts_venv_else_python3(tmp_path):
    """Every deploy script assembles its bundle with `project_python`'s PYTHON."""
    import shutil
    import sys

    show = 'project_python\necho "PYTHON=$PYTHON"'
    assert bash(show, PYTHON=sys.executable).stdout.strip() == f"PYTHON={sys.executable}"
    if (ROOT / ".venv" / "bin" / "python").exists():
        unset = {k: v for k, v in os.environ.items() if k != "PYTHON"}
        done = subprocess.run(["bash", "-c", f"source {shlex.quote(str(LIB))}\n{show}"], capture_output=True,
                              text=True, env=unset)
        assert done.stdout.strip() == f"PYTHON={ROOT / '.venv' / 'bin' / 'python'}"
    assert bash(show, PYTHON=str(tmp_path / "gone")).stdout.strip() == f"PYTHON={shutil.which('python3')}"
    bare = subprocess.run([shutil.which("bash"), "-c", f"DEPLOY_NAME=deploy-test\nsource {shlex.quote(str(LIB))}\n{show}"],
                          capture_output=True, text=True, env={"PATH": str(tmp_path), "PYTHON": str(tmp_path / "gone")})
    assert (bare.returncode, bare.stderr) == (1, "deploy-test: python3 is needed to assemble the bundle\n")
