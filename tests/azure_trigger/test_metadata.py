"""What the Functions host indexes from `app`, and the config files it reads (offline)."""

from __future__ import annotations

import fnmatch
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import azure.functions as func

from core.config import DEFAULT_WORKER_LEASE_S
from tests.platforms.azure import functions_by_name

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "azure_trigger" / "bundle"


def _timespan_s(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _bindings(name: str) -> list[dict]:
    return json.loads(functions_by_name()[name].get_function_json())["bindings"]


def test_app_has_exactly_ingest_process_and_sweep():
    assert set(functions_by_name()) == {"ingest", "process", "sweep"}


def test_sweep_is_a_timer_trigger_in_the_same_app():
    [trigger] = _bindings("sweep")
    assert trigger["type"] == "timerTrigger" and trigger["direction"] == "IN"
    assert trigger["schedule"] == "0 * * * * *"  # NCRONTAB with seconds: every minute
    assert not trigger.get("runOnStartup")


def test_ingest_is_an_anonymous_catch_all_http_trigger_that_takes_post():
    trigger, output = _bindings("ingest")
    assert trigger["type"] == "httpTrigger" and trigger["direction"] == "IN"
    assert trigger["authLevel"] == "ANONYMOUS"  # DT signs requests; it cannot send a function key
    assert trigger["route"] == "{*path}"  # any path under the route prefix
    assert "POST" in trigger["methods"]
    assert output == {"direction": "OUT", "type": "http", "name": "$return"}
    function = functions_by_name()["ingest"]
    params = inspect.signature(function.get_user_function()).parameters
    assert list(params) == [trigger["name"]]  # takes only the request
    assert params[trigger["name"]].annotation is func.HttpRequest  # a class, not a string


def test_process_is_a_queue_trigger_on_the_dt_queue_name_setting():
    [trigger] = _bindings("process")
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == "%DT_QUEUE_NAME%"
    assert trigger["connection"] == "AzureWebJobsStorage"
    params = inspect.signature(functions_by_name()["process"].get_user_function()).parameters
    assert list(params) == [trigger["name"]]
    assert params[trigger["name"]].annotation is func.QueueMessage


def test_script_file_is_the_bundle_root_shim():
    assert json.loads(functions_by_name()["ingest"].get_function_json())["scriptFile"] == "function_app.py"
    shim = (BUNDLE / "function_app.py").read_text()
    assert "from azure_trigger.function_app import app" in shim


def test_host_json_configures_base64_messages_and_bounded_retries():
    host = json.loads((BUNDLE / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"  # what StorageEventQueue writes
    assert isinstance(queues["maxDequeueCount"], int) and 2 <= queues["maxDequeueCount"] <= 10
    assert _timespan_s(queues["visibilityTimeout"]) > 0
    # A worker lease must outlive the function run it protects.
    assert _timespan_s(host["functionTimeout"]) <= DEFAULT_WORKER_LEASE_S
    assert host["extensions"]["http"]["routePrefix"] == "api"


def test_local_settings_example_names_every_setting_the_app_reads():
    example = json.loads((BUNDLE / "local.settings.json.example").read_text())
    values = example["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    for name in ("AzureWebJobsStorage", "DT_SIGNATURE_SECRET", "DT_QUEUE_NAME", "DT_DEDUP_TABLE", "DT_STATE_TABLE", "DT_HANDLERS"):
        assert name in values, name
    # %DT_QUEUE_NAME% in the trigger has no default: the setting must exist.
    assert values["DT_QUEUE_NAME"] == "dt-events"


def test_requirements_cover_every_third_party_import():
    sys.path.insert(0, str(ROOT / "scripts"))
    import lock  # the lock's reader (tests/deploy/test_locks.py checks the lock itself)

    inputs, pins, _ = lock.read_lock((BUNDLE / "requirements.txt").read_text())
    names = {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower() for line in inputs}
    assert names == {"azure-functions", "azure-data-tables", "azure-storage-queue", "azure-identity", "pyjwt"}
    assert names <= {pin.name for pin in pins}


def test_funcignore_keeps_the_code_and_drops_local_secrets():
    patterns = [p.strip() for p in (BUNDLE / ".funcignore").read_text().splitlines() if p.strip()]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)

    for kept in ("function_app.py", "host.json", "requirements.txt", "handlers.py", "core/receiver.py", "azure_trigger/function_app.py"):
        assert not ignored(kept), kept
    for dropped in ("local.settings.json", ".venv/lib", "__pycache__"):
        assert ignored(dropped), dropped


def test_deploy_script_is_valid_bash_and_uses_the_real_cli_commands():
    script = ROOT / "azure_trigger" / "deploy.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    # deploy.sh and the function-app steps it shares with deploy-direct.sh
    text = script.read_text() + (ROOT / "scripts" / "deploy-azure-lib.sh").read_text()
    for command in (
        "az group create",
        "az storage account create",
        "az functionapp create",
        "--consumption-plan-location",
        "--runtime python",
        "--functions-version 4",
        "--os-type Linux",
        "az functionapp config appsettings set",
        "func azure functionapp publish",
    ):
        assert command in text, command


def test_deploy_stops_with_a_clear_message_without_the_cli(tmp_path):
    # A PATH with bash's helpers but no `az` and no `func`.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = subprocess.run(
        ["/bin/bash", str(ROOT / "azure_trigger" / "deploy.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Azure CLI (az) is not installed" in result.stderr
