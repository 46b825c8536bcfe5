"""`make deploy-azure MODE=direct` (stub az/func record the calls): DT's app registration
gets a federated credential for DT's tokens and the Data Sender role on its one topic or
event hub, nothing else; the published app is the direct one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stub_cli import DT_CREDENTIALS, flag, run_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "azure_trigger" / "deploy.sh"
TOPIC_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ServiceBus/namespaces/ns/topics/dt-events"
HUB_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns/eventhubs/dt-events"
ANSWERS = [
    ("az", "account show --query id", "00000000-1111", 0),
    ("az", "account show --query tenantId", "tenant-9", 0),
    ("az", "ad app list", "", 0),
    ("az", "ad app create", "client-7", 0),
    ("az", "ad sp show", "", 1),
    ("az", "ad sp create", "sp-object-3", 0),
    ("az", "ad app federated-credential show", "", 1),
    ("az", "servicebus topic show", TOPIC_ID, 0),
    ("az", "eventhubs eventhub show", HUB_ID, 0),
    ("az", "functionapp show", "", 1),
    ("az", "functionapp identity assign", "worker-mi-5", 0),
]


def deploy(tmp_path, **env):
    base = {"MODE": "direct", "DT_ORGANIZATION_ID": "org-abc", "PYTHON": "python3"}
    return run_script(SCRIPT, tmp_path, ["az", "func", "dtconnector"], ANSWERS, {**base, **env})


def az(calls, *words):
    return [c for c in calls if c[0] == "az" and c[1 : 1 + len(words)] == list(words)]


@pytest.mark.parametrize(
    "kind, scope, sender, receiver",
    [
        ("servicebus", TOPIC_ID, "Azure Service Bus Data Sender", "Azure Service Bus Data Receiver"),
        ("eventhub", HUB_ID, "Azure Event Hubs Data Sender", "Azure Event Hubs Data Receiver"),
    ],
)
def test_dt_may_only_send_to_its_one_entity(tmp_path, kind, scope, sender, receiver):
    result, calls = deploy(tmp_path, DT_AZURE_DIRECT=kind)
    assert result.returncode == 0, result.stderr
    grants = az(calls, "role", "assignment", "create")
    to_dt = [c for c in grants if flag(c, "--assignee-object-id") == "sp-object-3"]
    assert len(to_dt) == 1
    assert flag(to_dt[0], "--role") == sender and flag(to_dt[0], "--scope") == scope
    # The only other grant: the worker's identity may receive from the same entity.
    others = [c for c in grants if c is not to_dt[0]]
    assert [(flag(c, "--assignee-object-id"), flag(c, "--role"), flag(c, "--scope")) for c in others] == [
        ("worker-mi-5", receiver, scope)
    ]
    assert not [c for c in calls if c[0] == "az" and "add-iam-policy-binding" in c]


def test_federated_credential_trusts_dts_issuer_and_only_our_organization(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    [create] = az(calls, "ad", "app", "federated-credential", "create")
    assert flag(create, "--id") == "client-7"
    credential = json.loads((tmp_path / "calls.log.files" / "credential.json").read_text())
    assert credential["issuer"] == "https://identity.disruptive-technologies.com"
    assert credential["subject"] == "org-abc"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]


def test_publishes_the_direct_app_with_direct_settings(tmp_path):
    result, calls = deploy(tmp_path, DT_AZURE_DIRECT="eventhub")
    assert result.returncode == 0, result.stderr
    [settings] = az(calls, "functionapp", "config", "appsettings", "set")
    values = settings[settings.index("--settings") + 1 :]
    assert "DT_DELIVERY=direct" in values and "DT_AZURE_DIRECT=eventhub" in values
    assert "DT_EVENTHUB_NAME=dt-events" in values
    assert any(v.startswith("DT_EVENTHUB__fullyQualifiedNamespace=") for v in values)
    assert not any(v.startswith("DT_SIGNATURE_SECRET") for v in values)
    [publish] = [c for c in calls if c[0] == "func"]
    assert publish[1:4] == ["azure", "functionapp", "publish"]
    assert "Storage queue 'dt-direct-poison'" in result.stdout
    assert "AZURE_EVENT_HUB" in result.stdout and "tenant-9" in result.stdout and "client-7" in result.stdout


def test_dt_credentials_wire_the_connector(tmp_path):
    result, calls = deploy(
        tmp_path,
        DTCONNECTOR=str(tmp_path / "bin" / "dtconnector"),
        **DT_CREDENTIALS,
    )
    assert result.returncode == 0, result.stderr
    [apply] = [c for c in calls if c[0] == "dtconnector"]
    assert flag(apply, "--type") == "AZURE_SERVICE_BUS"
    assert flag(apply, "--azure-url").startswith("sb://") and flag(apply, "--azure-url").endswith("/dt-events")
    assert flag(apply, "--azure-tenant-id") == "tenant-9"
    assert flag(apply, "--azure-client-id") == "client-7"


@pytest.mark.parametrize("env, message", [({"DT_ORGANIZATION_ID": ""}, "DT_ORGANIZATION_ID"), ({"DT_AZURE_DIRECT": "kafka"}, "DT_AZURE_DIRECT")])
def test_refuses_bad_settings_before_touching_azure(tmp_path, env, message):
    result, calls = deploy(tmp_path, **env)
    assert result.returncode != 0 and message in result.stderr
    assert calls == []
