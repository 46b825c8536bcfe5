"""scripts/check_deploy.py: parsing help text and checking commands, offline.

Saved help snippets (tests/deploy/help/) and IBM's reference (scripts/cli-reference/) stand
in for the CLIs; `make check-deploy` runs the same checks against the installed CLIs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import check_deploy as cd  # noqa: E402

HELP = Path(__file__).with_name("help")
GCLOUD_DEPLOY = (HELP / "gcloud-functions-deploy.txt").read_text()
IBM = cd.IbmReference.load()


def gcloud_deploy(argv):
    return cd.CommandHelp(("gcloud", "functions", "deploy"), cd.flags_in(GCLOUD_DEPLOY), cd.choices_in(GCLOUD_DEPLOY))


def test_gcloud_flags_include_negatable_and_global_ones():
    flags = cd.flags_in(GCLOUD_DEPLOY)
    assert {"--retry", "--build-service-account", "--trigger-topic", "--set-secrets"} <= flags
    assert {"--allow-unauthenticated", "--no-allow-unauthenticated"} <= flags  # --[no-]allow-...
    assert {"--project", "--quiet"} <= flags  # GCLOUD WIDE FLAGS
    assert "--output-url" not in flags


def test_gcloud_enumerations_are_read_from_the_flag_block():
    choices = cd.choices_in(GCLOUD_DEPLOY)
    assert choices["--ingress-settings"] == ["all", "internal-only", "internal-and-gclb"]
    assert choices["--docker-registry"] == ["artifact-registry", "container-registry"]
    assert "--runtime" not in choices  # prose, not a list


def test_a_gcloud_group_is_recognised_by_its_sections():
    assert "COMMANDS" in cd._sections((HELP / "gcloud-pubsub-topics.txt").read_text())
    assert "COMMANDS" not in cd._sections(GCLOUD_DEPLOY)


def test_valid_gcloud_command_passes_and_each_mistake_is_named():
    good = ["gcloud", "functions", "deploy", "dt-ingest", "--gen2", "--retry", "--ingress-settings=all",
            "--build-service-account=projects/p/serviceAccounts/b@p.iam.gserviceaccount.com", "--project=p", "--quiet"]
    result = cd.check_command(good, gcloud_deploy)
    assert result.problems == [] and result.flags_checked == 6 and result.values_checked == 1
    bad = cd.check_command(["gcloud", "functions", "deploy", "f", "--ingress-settings", "everything", "--output-url"],
                           gcloud_deploy)
    assert bad.problems == [
        "gcloud functions deploy: --ingress-settings 'everything' is not one of all, internal-only, internal-and-gclb",
        "gcloud functions deploy: unknown flag --output-url",
    ]


def test_ibm_reference_rejects_output_url_and_accepts_jsonpath():
    url = cd.check_command(["ibmcloud", "ce", "fn", "get", "--name", "f", "--output", "url"], IBM.help)
    assert url.problems == [
        "ibmcloud ce function get: --output 'url' is not one of json, yaml, "
        "jsonpath=JSONPATH_EXPRESSION, jsonpath-as-json=JSONPATH_EXPRESSION"
    ]
    ok = cd.check_command(["ibmcloud", "ce", "fn", "get", "--name", "f", "--output", "jsonpath={.endpoint}"], IBM.help)
    assert ok.problems == [] and ok.values_checked == 1


def test_ibm_aliases_unknown_commands_and_flags():
    assert IBM.help(["ibmcloud", "ce", "sub", "cron", "create", "--name", "x"]).path == (
        "ibmcloud", "ce", "subscription", "cron", "create")
    for argv, problem in [
        (["ibmcloud", "ce", "fn", "deploy", "--name", "x"], "is not a command in IBM's CLI reference"),
        (["ibmcloud", "iam", "oauth-tokens"], "is not a command in IBM's CLI reference"),
        (["ibmcloud", "ce", "fn", "create", "--name", "x", "--python"], "unknown flag --python"),
        (["ibmcloud", "ce", "job", "create", "--name", "x", "--mode", "forever"], "--mode 'forever' is not one of"),
    ]:
        [message] = cd.check_command(argv, IBM.help).problems
        assert problem in message


def test_dry_run_lines_are_parsed_and_duplicates_checked_once():
    out = "==> step\nDRY-RUN: ibmcloud ce fn get --name 'a b'\nDRY-RUN: ibmcloud ce fn get --name 'a b'\nDRY-RUN: func x\n"
    commands = cd.commands_in(out)
    assert commands[0] == ["ibmcloud", "ce", "fn", "get", "--name", "a b"]
    results = cd.check_all(commands, IBM)
    assert len(results) == 2 and results[1].unchecked and "Core Tools" in results[1].unchecked


def test_the_ibm_deploy_script_passes_against_ibms_reference():
    """The real script, dry-run in every variant check-deploy uses; no ibmcloud needed."""
    commands = []
    for variant in cd.VARIANTS["ibm"]:
        status, out, err = cd.dry_run(ROOT / cd.SCRIPTS["ibm"], variant)
        assert status == 0, err
        commands += cd.commands_in(out)
    results = cd.check_all(commands, IBM)
    assert [r.problems for r in results if r.problems] == []
    paths = {IBM.help(r.argv).path[2:] for r in results}
    assert {("function", "create"), ("function", "update"), ("function", "runtimes"), ("job", "create"),
            ("job", "update"), ("subscription", "cron", "create"), ("secret", "create")} <= paths


def _with_output_url(tmp_name: str) -> Path:
    script = (ROOT / cd.SCRIPTS["ibm"]).read_text().replace("--output 'jsonpath={.endpoint}'", "--output url")
    assert "--output url" in script
    copy = ROOT / "ibm_action" / f".{tmp_name}-{os.getpid()}.sh"  # beside the original: it cds to ..
    copy.write_text(script)
    return copy


def test_check_deploy_fails_on_output_url():
    """The pre-fix URL line, put back into today's script: the dry-run check fails on it."""
    copy = _with_output_url("check-deploy-test")
    try:
        status, out, err = cd.dry_run(copy, {})
    finally:
        copy.unlink()
    assert status == 0, err
    failed = [r for r in cd.check_all(cd.commands_in(out), IBM) if r.problems]
    assert [r.argv[-2:] for r in failed] == [["--output", "url"]]


ORIGINAL = "068f210"  # the last commit before this fix


def test_the_original_script_fails_with_a_recording_stand_in(tmp_path):
    """The original deploy.sh (no dry-run mode) run with a stand-in ibmcloud on PATH."""
    shown = subprocess.run(["git", "show", f"{ORIGINAL}:ibm_action/deploy.sh"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"commit {ORIGINAL} is not in this clone's history")
    copy = ROOT / "ibm_action" / f".check-deploy-original-{os.getpid()}.sh"
    copy.write_text(shown.stdout)
    try:
        done = subprocess.run([sys.executable, str(ROOT / "scripts/check_deploy.py"), "--shim", "ibmcloud", str(copy)],
                              capture_output=True, text=True, timeout=300)
    finally:
        copy.unlink()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--output 'url' is not one of json, yaml" in done.stdout


@pytest.mark.parametrize("platform", sorted(cd.SCRIPTS))
def test_every_deploy_script_dry_runs_without_credentials(platform):
    status, out, err = cd.dry_run(ROOT / cd.SCRIPTS[platform], cd.VARIANTS[platform][0])
    assert status == 0, err
    assert cd.commands_in(out)
    assert cd.FAKE_ENV["DT_SIGNATURE_SECRET"] not in out + err


DIRECT_VARIANTS = [
    (platform, variant) for platform in sorted(cd.VARIANTS) for variant in cd.VARIANTS[platform]
    if variant.get("MODE") == "direct"
]


def test_direct_mode_is_checked_on_aws_gcp_and_azure():
    assert {platform for platform, _ in DIRECT_VARIANTS} == {"aws", "gcp", "azure"}
    kinds = {v.get("DT_AZURE_DIRECT") for p, v in DIRECT_VARIANTS if p == "azure"}
    assert kinds == {"servicebus", "eventhub"}


@pytest.mark.parametrize("platform, variant", DIRECT_VARIANTS)
def test_every_direct_deploy_script_dry_runs_without_credentials(platform, variant):
    status, out, err = cd.dry_run(ROOT / cd.SCRIPTS[platform], variant)
    assert status == 0, err
    commands = cd.commands_in(out)
    assert commands and "deploy-direct.sh" not in err
    # What only direct mode does: DT's identity may publish into the queue.
    joined = "\n".join(" ".join(c) for c in commands)
    assert {"aws": "DtOrganizationId=", "gcp": "workload-identity-pools", "azure": "federated-credential"}[platform] in joined


def test_az_flags_mentioned_in_a_description_get_no_values_of_their_own():
    text = (HELP / "az-role-assignment-create.txt").read_text()
    choices = cd.choices_in(text)
    assert choices["--assignee-principal-type"] == ["ForeignGroup", "Group", "ServicePrincipal", "User"]
    assert "--assignee-object-id" not in choices  # only mentioned in the next flag's description
    assert choices["--output"] == ["json", "jsonc", "none", "table", "tsv", "yaml", "yamlc"]
    assert {"--role", "--scope", "--name", "-n", "--output", "-o", "--subscription"} <= cd.flags_in(text)

    def helper(argv):
        return cd.CommandHelp(("az", "role", "assignment", "create"), cd.flags_in(text), choices)

    ok = ["az", "role", "assignment", "create", "--assignee-object-id", "1111", "--assignee-principal-type",
          "ServicePrincipal", "--role", "Storage Blob Data Owner", "--scope", "/s", "--output", "none"]
    assert cd.check_command(ok, helper).problems == []
    bad = ok[:7] + ["Robot"] + ok[8:]
    assert cd.check_command(bad, helper).problems == [
        "az role assignment create: --assignee-principal-type 'Robot' is not one of ForeignGroup, Group, ServicePrincipal, User"]


def test_sam_click_options_and_their_choices():
    text = (HELP / "sam-build.txt").read_text()
    assert {"--use-container", "--no-use-container", "-u", "--template-file", "--build-dir"} <= cd.flags_in(text)
    assert cd.choices_in(text)["--mount-with"] == ["READ", "WRITE"]
    assert "--use-containers" not in cd.flags_in(text)
