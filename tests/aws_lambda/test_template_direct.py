"""aws_lambda/template-direct.yaml: cfn-lint clean, and DT's role can do one thing only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aws_lambda.handler as handler
from tests.aws_lambda.cfn_lint import BOGUS, described, findings

#: One worker runs every cfn-lint test, so cfn-lint runs once (tests/aws_lambda/cfn_lint.py).
pytestmark = pytest.mark.xdist_group("cfn-lint")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "aws_lambda" / "template-direct.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    doc, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return doc


def trust_policy(template: dict) -> dict:
    """The role's trust policy: a !Sub'd JSON text, read with the parameters left as ${...}."""
    doc = template["Resources"]["DtPublisherRole"]["Properties"]["AssumeRolePolicyDocument"]
    return json.loads(doc["Fn::Sub"])


def test_cfn_lint_passes():
    assert findings("direct") == [], described(findings("direct"))


def test_cfn_lint_would_catch_a_broken_direct_template():
    matches = findings("direct-broken")
    assert any(m["Level"] == "Error" and BOGUS in m["Message"] for m in matches), described(matches)


def test_no_public_endpoint_and_no_ingest(template):
    functions = {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert {n: f["Properties"]["Handler"] for n, f in functions.items()} == {"WorkerFunction": "aws_lambda.handler.process"}
    assert callable(handler.process)
    assert "FunctionUrlConfig" not in functions["WorkerFunction"]["Properties"]
    types = {r["Type"] for r in template["Resources"].values()}
    assert "AWS::Lambda::Permission" not in types and "AWS::Serverless::Api" not in types
    assert "SignatureSecret" not in template["Parameters"]


def test_worker_runs_in_direct_mode_with_a_dead_letter_queue(template):
    env = template["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["DT_DELIVERY"] == "direct"
    assert env["DT_DEDUP_TABLE"] == {"Ref": "DedupTable"}  # the worker's ledger: the only dedup
    redrive = template["Resources"]["EventQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    events = template["Resources"]["WorkerFunction"]["Properties"]["Events"]["Queue"]["Properties"]
    assert events["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_dt_role_grants_nothing_beyond_sending_to_its_one_queue(template):
    role = template["Resources"]["DtPublisherRole"]["Properties"]
    assert "ManagedPolicyArns" not in role and "PermissionsBoundary" not in role
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statements == [
        {"Sid": "SendToTheEventQueueOnly", "Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": {"Fn::GetAtt": ["EventQueue", "Arn"]}}
    ]
    # No other resource grants the role anything (no queue policy, no managed policy).
    referencing = [
        name for name, r in template["Resources"].items()
        if name != "DtPublisherRole" and "DtPublisherRole" in json.dumps(r)
    ]
    assert referencing == []
    assert not any(r["Type"] in ("AWS::SQS::QueuePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
                   for r in template["Resources"].values())


def test_dt_role_trusts_only_dts_issuer_audience_and_organization(template):
    [statement] = trust_policy(template)["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": "arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/${DtOidcIssuer}"
    }
    assert statement["Condition"] == {
        "StringEquals": {"${DtOidcIssuer}:aud": "${DtAudience}", "${DtOidcIssuer}:sub": "${DtOrganizationId}"}
    }
    params = template["Parameters"]
    assert "Default" not in params["DtAudience"] and "Default" not in params["DtOrganizationId"]
    provider = template["Resources"]["DtOidcProvider"]["Properties"]
    assert provider == {"Url": {"Fn::Sub": "https://${DtOidcIssuer}"}, "ClientIdList": [{"Ref": "DtAudience"}]}


def test_outputs_are_what_the_connector_needs(template):
    assert {"EventQueueUrl", "DtRoleArn", "DtAudience", "DeadLetterQueueUrl"} <= set(template["Outputs"])
