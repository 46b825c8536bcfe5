"""`make deploy-azure MODE=direct` (stub az/func record the calls): DT's app registration
gets a federated credential for DT's tokens and the Data Sender role on its one topic or
event hub, nothing else; the published app is the direct one, on Flex Consumption with
identity-based storage by default (DT_AZURE_PLAN=consumption keeps Linux Consumption)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stub_cli import DT_CREDENTIALS, flag, run_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "azure_trigger" / "deploy.sh"
TOPIC_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ServiceBus/namespaces/ns/topics/dt-events"
HUB_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns/eventhubs/dt-events"
STORAGE_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"
STORAGE_ROLES = ["Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Table Data Contributor"]
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
    ("az", "--query principalId", "worker-mi-5", 0),  # the app's identity (Flex) or system one
    ("az", "--query clientId", "worker-client-6", 0),
    ("az", "storage account show --name", STORAGE_ID, 0),
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
    # The only other grants: the worker's identity may receive from the same entity, and
    # reach its own storage account (identity-based storage on Flex Consumption).
    others = [c for c in grants if c is not to_dt[0]]
    assert sorted((flag(c, "--assignee-object-id"), flag(c, "--role"), flag(c, "--scope")) for c in others) == sorted(
        [("worker-mi-5", receiver, scope)] + [("worker-mi-5", role, STORAGE_ID) for role in STORAGE_ROLES]
    )
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
    settings = az(calls, "functionapp", "config", "appsettings", "set")[-1]
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


def test_flex_consumption_python_312_and_identity_based_connections_by_default(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    [create] = az(calls, "functionapp", "create")
    assert flag(create, "--flexconsumption-location") == "westeurope" and "--consumption-plan-location" not in create
    assert flag(create, "--runtime-version") == "3.12"
    assert flag(create, "--deployment-storage-auth-type") == "UserAssignedIdentity"
    settings = [v for c in az(calls, "functionapp", "config", "appsettings", "set") for v in c]
    assert "AzureWebJobsStorage__credential=managedidentity" in settings
    assert "AzureWebJobsStorage__clientId=worker-client-6" in settings
    # The Service Bus trigger connects as the same user-assigned identity.
    assert "DT_SERVICEBUS__credential=managedidentity" in settings
    assert "DT_SERVICEBUS__clientId=worker-client-6" in settings
    [delete] = az(calls, "functionapp", "config", "appsettings", "delete")
    assert flag(delete, "--setting-names") == "AzureWebJobsStorage"


def test_consumption_plan_keeps_linux_consumption_and_a_system_identity(tmp_path):
    result, calls = deploy(tmp_path, DT_AZURE_PLAN="consumption", DT_AZURE_DIRECT="eventhub")
    assert result.returncode == 0, result.stderr
    [create] = az(calls, "functionapp", "create")
    assert flag(create, "--consumption-plan-location") == "westeurope" and flag(create, "--os-type") == "Linux"
    assert flag(create, "--runtime-version") == "3.12"
    [assign] = az(calls, "functionapp", "identity", "assign")
    assert "--identities" not in assign  # system-assigned
    grants = az(calls, "role", "assignment", "create")
    assert [flag(c, "--role") for c in grants if flag(c, "--assignee-object-id") == "worker-mi-5"] == [
        "Azure Event Hubs Data Receiver"
    ]
    [settings] = az(calls, "functionapp", "config", "appsettings", "set")
    assert not any("__credential" in v or "__clientId" in v for v in settings)


def test_a_runtime_past_end_of_life_is_refused(tmp_path):
    result, calls = deploy(tmp_path, DT_TODAY="2028-10-31")  # Python 3.12's end of life on Azure Functions
    assert result.returncode != 0 and "'3.12'" in result.stderr and "end of life" in result.stderr
    assert calls == []


def test_dry_run_needs_no_login_and_prints_every_command(tmp_path):
    env = {"MODE": "direct", "DT_ORGANIZATION_ID": "org-abc", "PYTHON": "python3", "DRY_RUN": "1"}
    result, calls = run_script(SCRIPT, tmp_path, [], [], env)
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("DRY-RUN: ")]
    assert any(line.startswith("DRY-RUN: az ad app federated-credential create ") for line in printed)
    assert any(line.startswith("DRY-RUN: func azure functionapp publish ") for line in printed)
    assert not any("dry-run-key" in line for line in printed)  # the storage key is masked
    assert calls == []
