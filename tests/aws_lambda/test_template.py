"""aws_lambda/template.yaml: cfn-lint clean (offline) and wired the way the issue asks."""

from __future__ import annotations

from pathlib import Path

import pytest

import aws_lambda.handler as handler
from tests.aws_lambda.cfn_lint import BOGUS, described, findings

#: One worker runs every cfn-lint test, so cfn-lint runs once (tests/aws_lambda/cfn_lint.py).
pytestmark = pytest.mark.xdist_group("cfn-lint")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "aws_lambda" / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    doc, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return doc


def resources_of(template: dict, type_: str) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


def props(template: dict, name: str) -> dict:
    return template["Resources"][name]["Properties"]


def test_cfn_lint_passes():
    assert findings("template") == [], described(findings("template"))


def test_cfn_lint_would_catch_a_broken_template():
    matches = findings("template-broken")
    assert any(m["Level"] == "Error" and BOGUS in m["Message"] for m in matches), described(matches)


def test_both_functions_point_at_real_entry_points(template):
    functions = resources_of(template, "AWS::Serverless::Function")
    handlers = {name: f["Properties"]["Handler"] for name, f in functions.items()}
    assert handlers == {"IngestFunction": "aws_lambda.handler.ingest", "WorkerFunction": "aws_lambda.handler.process"}
    assert callable(handler.ingest) and callable(handler.process)
    assert template["Globals"]["Function"]["CodeUri"] == "."


def test_function_url_is_public_and_is_the_output(template):
    ingest = props(template, "IngestFunction")
    assert ingest["FunctionUrlConfig"]["AuthType"] == "NONE"
    assert template["Outputs"]["IngestUrl"]["Value"] == {"Fn::GetAtt": ["IngestFunctionUrl", "FunctionUrl"]}
    assert ingest["Timeout"] < 10  # DT's answer budget


def test_queue_has_a_dead_letter_queue_and_redrive(template):
    queue = props(template, "EventQueue")
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxAttempts"}
    assert template["Resources"]["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert "DeadLetterQueueUrl" in template["Outputs"]


def test_worker_reports_batch_item_failures(template):
    [source] = props(template, "WorkerFunction")["Events"].values()
    assert source["Type"] == "SQS"
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["EventQueue", "Arn"]}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_visibility_timeout_is_at_least_six_worker_timeouts_and_the_lease_fits(template):
    worker = props(template, "WorkerFunction")
    visibility = props(template, "EventQueue")["VisibilityTimeout"]
    assert visibility >= 6 * worker["Timeout"]
    lease = float(worker["Environment"]["Variables"]["DT_WORKER_LEASE_S"])
    assert worker["Timeout"] < lease < visibility


def test_both_tables_have_the_right_keys_and_ttl(template):
    dedup, state = props(template, "DedupTable"), props(template, "StateTable")
    assert dedup["KeySchema"] == [{"AttributeName": "eventId", "KeyType": "HASH"}]
    assert dedup["AttributeDefinitions"] == [{"AttributeName": "eventId", "AttributeType": "S"}]
    assert state["KeySchema"] == [
        {"AttributeName": "deviceId", "KeyType": "HASH"},
        {"AttributeName": "eventType", "KeyType": "RANGE"},
    ]
    for table in (dedup, state):
        assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}


def test_secret_is_no_echo_or_a_secrets_manager_arn(template):
    params = template["Parameters"]
    assert params["SignatureSecret"]["NoEcho"] is True
    env = props(template, "IngestFunction")["Environment"]["Variables"]
    assert env["DT_SIGNATURE_SECRET"]["Fn::If"][2] == {"Ref": "SignatureSecret"}
    assert env["DT_SIGNATURE_SECRET_ARN"]["Fn::If"][1] == {"Ref": "SignatureSecretArn"}
    # The worker never needs the secret.
    worker_env = props(template, "WorkerFunction").get("Environment", {}).get("Variables", {})
    assert not {"DT_SIGNATURE_SECRET", "DT_SIGNATURE_SECRET_ARN"} & set(worker_env)
    assert not {"DT_SIGNATURE_SECRET", "DT_SIGNATURE_SECRET_ARN"} & set(template["Globals"]["Function"]["Environment"]["Variables"])


def test_every_variable_the_entry_points_need_is_set(template):
    common = template["Globals"]["Function"]["Environment"]["Variables"]
    ingest = {**common, **props(template, "IngestFunction")["Environment"]["Variables"]}
    worker = {**common, **props(template, "WorkerFunction")["Environment"]["Variables"]}
    assert {"DT_DEDUP_TABLE", "DT_QUEUE_URL", "DT_HANDLERS"} <= set(ingest)
    assert {"DT_DEDUP_TABLE", "DT_STATE_TABLE", "DT_HANDLERS"} <= set(worker)
    assert common["DT_MAX_ATTEMPTS"] == {"Ref": "MaxAttempts"}  # the worker logs the last attempt


def _statements(policies) -> list[dict]:
    out = []
    for p in policies:
        if "Fn::If" in p:
            p = p["Fn::If"][1]
        out.extend(p.get("Statement", []) or p.get("PolicyDocument", {}).get("Statement", []))
    return out


def test_policies_are_least_privilege(template):
    ingest = _statements(props(template, "IngestFunction")["Policies"])
    role = template["Resources"]["WorkerRole"]["Properties"]
    worker = _statements(role["Policies"])
    assert props(template, "WorkerFunction")["Role"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}
    for statement in ingest + worker:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in a for a in actions), statement
        assert statement["Resource"] != "*", statement
    ingest_actions = {a for s in ingest for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert ingest_actions == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
    }
