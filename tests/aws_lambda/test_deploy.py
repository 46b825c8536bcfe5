"""deploy.sh runs the real `sam build` / `sam deploy` commands (with stub CLIs here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "aws_lambda" / "deploy.sh"

STUB = """#!/bin/bash
printf '%s\\n' "$(basename "$0")" "$@" "--END--" >> "$STUB_LOG"
if [ "$(basename "$0")" = aws ] && [ "$1" = cloudformation ]; then echo "https://abc.lambda-url.eu-west-1.on.aws/"; fi
if [ "$(basename "$0")" = aws ] && [ "$1" = sts ] && [ -n "$STUB_NO_CREDENTIALS" ]; then exit 255; fi
exit 0
"""


@pytest.fixture
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sam", "aws"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run(tmp_path, stubs, **env):
    log = tmp_path / "calls.log"
    full = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp_path), **env}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full, timeout=120)
    calls = []
    if log.exists():
        current: list[str] = []
        for line in log.read_text().splitlines():
            if line == "--END--":
                calls.append(current)
                current = []
            else:
                current.append(line)
    return result, calls


def test_deploys_with_sam_build_and_deploy(tmp_path, stubs):
    result, calls = run(tmp_path, stubs, AWS_REGION="eu-west-1", DT_SIGNATURE_SECRET='s3cr3t with "quotes"')
    assert result.returncode == 0, result.stderr
    sam = [c for c in calls if c[0] == "sam"]
    assert [c[1] for c in sam] == ["build", "deploy"]
    build, deploy = sam
    assert build[build.index("--template-file") + 1].endswith("/src/template.yaml")
    assert deploy[deploy.index("--stack-name") + 1] == "dtconnector"
    assert deploy[deploy.index("--region") + 1] == "eu-west-1"
    assert "CAPABILITY_IAM" in deploy and "--resolve-s3" in deploy
    params = deploy[deploy.index("--parameter-overrides") + 1 :]
    assert 'SignatureSecret="s3cr3t with \\"quotes\\""' in params
    assert 'SignatureSecretArn=""' in params
    assert 'HandlerModules="handlers"' in params and 'MaxAttempts="5"' in params
    assert "https://abc.lambda-url.eu-west-1.on.aws/" in result.stdout


def test_secret_arn_is_passed_instead_of_the_secret(tmp_path, stubs):
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dt-AbCdEf"
    result, calls = run(tmp_path, stubs, AWS_REGION="eu-west-1", DT_SIGNATURE_SECRET_ARN=arn, DT_AWS_STACK="dt-test")
    assert result.returncode == 0, result.stderr
    deploy = [c for c in calls if c[:2] == ["sam", "deploy"]][0]
    assert f'SignatureSecretArn="{arn}"' in deploy and 'SignatureSecret=""' in deploy
    assert deploy[deploy.index("--stack-name") + 1] == "dt-test"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DT_SIGNATURE_SECRET": "x"}, "AWS_REGION"),
        ({"AWS_REGION": "eu-west-1"}, "DT_SIGNATURE_SECRET"),
        ({"AWS_REGION": "eu-west-1", "DT_SIGNATURE_SECRET": "x", "STUB_NO_CREDENTIALS": "1"}, "credentials"),
        ({"AWS_REGION": "eu-west-1", "DT_SIGNATURE_SECRET": "a\\b"}, "backslash"),
    ],
    ids=["no-region", "no-secret", "no-credentials", "backslash"],
)
def test_stops_with_a_clear_message(tmp_path, stubs, env, message):
    result, calls = run(tmp_path, stubs, **env)
    assert result.returncode != 0
    assert message in result.stderr
    assert not [c for c in calls if c[0] == "sam"]


def test_missing_sam_cli_is_reported(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result, _ = run(tmp_path, empty, AWS_REGION="eu-west-1", DT_SIGNATURE_SECRET="x")
    assert result.returncode != 0
    assert "SAM CLI" in result.stderr
