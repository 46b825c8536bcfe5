"""deploy.sh runs the real `sam build` / `sam deploy` commands (with stub CLIs here)."""

from __future__ import annotations

import subprocess
import sys
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
    (bin_dir / "python3.12").symlink_to(sys.executable)  # the template's runtime, for sam build
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


DOCKER_UP = "#!/bin/sh\n[ \"$1\" = info ] && exit 0\nexit 1\n"
DOCKER_DOWN = "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n"


@pytest.mark.parametrize("docker, expected", [(DOCKER_UP, "container"), (DOCKER_DOWN, "stop"), (None, "stop")])
def test_without_python312_docker_builds_in_a_container_or_the_script_says_what_to_install(
        tmp_path, stubs, docker, expected):
    (stubs / "python3.12").unlink()
    if docker:
        (stubs / "docker").write_text(docker)
        (stubs / "docker").chmod(0o755)
    result, calls = run(tmp_path, stubs, AWS_REGION="eu-west-1", DT_SIGNATURE_SECRET="x", PYTHON=sys.executable)
    builds = [c for c in calls if c[:2] == ["sam", "build"]]
    if expected == "container":
        assert result.returncode == 0, result.stderr
        assert "--use-container" in builds[0]
    else:
        assert result.returncode != 0 and not builds
        assert "python3.12" in result.stderr and "Docker" in result.stderr and "Install Python 3.12" in result.stderr


def test_python312_on_path_builds_locally(tmp_path, stubs):
    result, calls = run(tmp_path, stubs, AWS_REGION="eu-west-1", DT_SIGNATURE_SECRET="x")
    assert result.returncode == 0, result.stderr
    assert "--use-container" not in [c for c in calls if c[:2] == ["sam", "build"]][0]


def test_a_runtime_past_end_of_life_is_refused(tmp_path, stubs):
    result, calls = run(tmp_path, stubs, AWS_REGION="eu-west-1", DT_SIGNATURE_SECRET="x", DT_TODAY="2029-01-10")
    assert result.returncode != 0 and "python3.12" in result.stderr and "end of life" in result.stderr
    assert not [c for c in calls if c[0] == "sam"]


def test_dry_run_prints_a_function_url_as_the_template_creates(tmp_path):
    """The stack's IngestUrl is a Lambda Function URL (IngestFunctionUrl), not API Gateway."""
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DRY_RUN": "1",
                                 "AWS_REGION": "eu-west-1", "DT_SIGNATURE_SECRET": "a-secret-of-some-length"})
    assert result.returncode == 0, result.stderr
    assert "point the DT Data Connector at https://00000000000000000000000000000000.lambda-url.eu-west-1.on.aws/" \
        in result.stdout
    assert "execute-api" not in result.stdout + result.stderr
    assert "IngestFunctionUrl.FunctionUrl" in (ROOT / "aws_lambda" / "template.yaml").read_text()
