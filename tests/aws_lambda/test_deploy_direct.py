"""`make deploy-aws MODE=direct`: deploy.sh hands over to deploy-direct.sh, which deploys
template-direct.yaml and wires DT (stub CLIs record the calls)."""

from __future__ import annotations

from pathlib import Path

from tests.stub_cli import DT_CREDENTIALS, flag, run_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "aws_lambda" / "deploy.sh"
ANSWERS = [
    ("aws", "EventQueueUrl", "https://sqs.eu-west-1.amazonaws.com/123456789012/dt-events", 0),
    ("aws", "DtRoleArn", "arn:aws:iam::123456789012:role/dt-publisher", 0),
]
BASE = {"MODE": "direct", "AWS_REGION": "eu-west-1", "DT_ORGANIZATION_ID": "org-abc"}


def deploy(tmp_path, **env):
    return run_script(SCRIPT, tmp_path, ["sam", "aws", "dtconnector"], ANSWERS, {**BASE, **env})


def test_direct_mode_deploys_the_direct_template_without_any_secret(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    build = next(c for c in calls if c[:2] == ["sam", "build"])
    template = Path(flag(build, "--template-file"))
    assert template.name == "template.yaml"
    sam_deploy = next(c for c in calls if c[:2] == ["sam", "deploy"])
    params = sam_deploy[sam_deploy.index("--parameter-overrides") + 1 :]
    assert 'DtOrganizationId="org-abc"' in params
    assert 'DtAudience="dtconnector-dtconnector-direct"' in params
    assert not any("Secret" in p for p in params)
    assert flag(sam_deploy, "--stack-name") == "dtconnector-direct"
    # No DT credentials: the exact manual steps, with the stack's outputs.
    assert "AWS_SQS" in result.stdout
    assert "https://sqs.eu-west-1.amazonaws.com/123456789012/dt-events" in result.stdout
    assert "arn:aws:iam::123456789012:role/dt-publisher" in result.stdout
    assert "dtconnector send --to sqs://" in result.stdout
    assert not any(c[0] == "dtconnector" for c in calls)


def test_http_mode_is_unchanged(tmp_path):
    result, calls = deploy(tmp_path, MODE="http", DT_SIGNATURE_SECRET="s")
    assert result.returncode == 0, result.stderr
    sam_deploy = next(c for c in calls if c[:2] == ["sam", "deploy"])
    assert any(p.startswith("SignatureSecret=") for p in sam_deploy)
    assert not any("DtOrganizationId" in p for p in sam_deploy)


def test_dt_credentials_wire_the_connector(tmp_path):
    result, calls = deploy(
        tmp_path,
        DTCONNECTOR=str(tmp_path / "bin" / "dtconnector"),
        **DT_CREDENTIALS,
        DT_AUDIENCE="my-aud",
        DT_OIDC_ISSUER="https://issuer.example.com/dc/",
    )
    assert result.returncode == 0, result.stderr
    [apply] = [c for c in calls if c[0] == "dtconnector"]
    assert apply[1:3] == ["connector", "apply"]
    assert flag(apply, "--type") == "AWS_SQS"
    assert flag(apply, "--project") == "proj-1"
    assert flag(apply, "--sqs-queue-url") == "https://sqs.eu-west-1.amazonaws.com/123456789012/dt-events"
    assert flag(apply, "--aws-role-arn") == "arn:aws:iam::123456789012:role/dt-publisher"
    assert flag(apply, "--audience") == "my-aud"
    assert "s" not in apply  # the service account secret is read from the environment
    sam_deploy = next(c for c in calls if c[:2] == ["sam", "deploy"])
    assert 'DtOidcIssuer="issuer.example.com/dc"' in sam_deploy  # the same value as on GCP and Azure


def test_organization_id_is_required(tmp_path):
    result, calls = deploy(tmp_path, DT_ORGANIZATION_ID="")
    assert result.returncode != 0
    assert "DT_ORGANIZATION_ID" in result.stderr
    assert not any(c[0] == "sam" for c in calls)


def test_a_runtime_past_end_of_life_is_refused(tmp_path):
    result, calls = deploy(tmp_path, DT_TODAY="2029-01-10")  # python3.12's end of life on Lambda
    assert result.returncode != 0 and "python3.12" in result.stderr and "end of life" in result.stderr
    assert not any(c[0] == "sam" for c in calls)


def test_dry_run_prints_every_command_without_credentials(tmp_path):
    result, calls = run_script(SCRIPT, tmp_path, [], [], {**BASE, "DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("DRY-RUN: ")]
    assert [line.split()[1:3] for line in printed] == [
        ["aws", "sts"], ["sam", "build"], ["sam", "deploy"], ["aws", "cloudformation"], ["aws", "cloudformation"]
    ]
    assert calls == []
