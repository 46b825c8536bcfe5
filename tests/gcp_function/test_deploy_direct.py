"""`make deploy-gcp MODE=direct` (stub gcloud records the calls): DT's principal gets
roles/pubsub.publisher on its one topic and nothing else; the worker is subscribed with
retry and a dead-letter topic; no HTTP function is deployed."""

from __future__ import annotations

from pathlib import Path

from tests.stub_cli import DT_CREDENTIALS, flag, run_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "gcp_function" / "deploy.sh"
ANSWERS = [
    ("gcloud", "config get-value account", "me@example.com", 0),
    ("gcloud", "projects describe", "424242", 0),
    ("gcloud", "iam workload-identity-pools describe", "", 1),
    ("gcloud", "iam workload-identity-pools providers describe", "", 1),
    ("gcloud", "pubsub topics describe", "", 1),
    ("gcloud", "functions describe", "projects/p/locations/europe-west1/triggers/t1", 0),
    ("gcloud", "eventarc triggers describe", "projects/p/subscriptions/eventarc-sub", 0),
]
PRINCIPAL = "principal://iam.googleapis.com/projects/424242/locations/global/workloadIdentityPools/dt-connector/subject/org-abc"


def deploy(tmp_path, **env):
    base = {"MODE": "direct", "GOOGLE_CLOUD_PROJECT": "p", "DT_ORGANIZATION_ID": "org-abc"}
    return run_script(SCRIPT, tmp_path, ["gcloud", "dtconnector"], ANSWERS, {**base, **env})


def gcloud(calls, *words):
    return [c for c in calls if c[0] == "gcloud" and c[1 : 1 + len(words)] == list(words)]


def test_dt_principal_may_only_publish_to_its_topic(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    bindings = [c for c in calls if c[0] == "gcloud" and "add-iam-policy-binding" in c]
    to_dt = [c for c in bindings if any(PRINCIPAL in a or "principal" in a for a in c)]
    assert len(to_dt) == 1
    [grant] = to_dt
    assert grant[1:4] == ["pubsub", "topics", "add-iam-policy-binding"]
    assert grant[4] == "dt-direct-events"
    assert flag(grant, "--member") == PRINCIPAL
    assert flag(grant, "--role") == "roles/pubsub.publisher"
    # Nothing project-wide or on a service account for any workload-identity principal.
    assert not any("principal" in (flag(c, "--member") or "") for c in bindings if c is not grant)
    # The worker's own account has no publish role (DT publishes, not us).
    project_grants = gcloud(calls, "projects", "add-iam-policy-binding")
    worker = "serviceAccount:dt-direct-worker@p.iam.gserviceaccount.com"
    project_roles = {flag(c, "--role") for c in project_grants if flag(c, "--member") == worker}
    assert project_roles == {"roles/datastore.user", "roles/eventarc.eventReceiver"}
    # The only other project grants: the build account's, as in http mode.
    builder = "serviceAccount:dt-connector-build@p.iam.gserviceaccount.com"
    assert {flag(c, "--member") for c in project_grants} == {worker, builder}


def test_workload_identity_provider_trusts_dts_issuer_and_only_our_organization(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    [provider] = gcloud(calls, "iam", "workload-identity-pools", "providers", "create-oidc")
    assert flag(provider, "--issuer-uri") == "https://identity.disruptive-technologies.com"
    assert flag(provider, "--attribute-mapping") == "google.subject=assertion.sub"
    assert flag(provider, "--attribute-condition") == "assertion.sub == 'org-abc'"
    audience = "//iam.googleapis.com/projects/424242/locations/global/workloadIdentityPools/dt-connector/providers/dt-oidc"
    assert flag(provider, "--allowed-audiences") == audience
    assert "GOOGLE_CLOUD_PUBSUB" in result.stdout and audience in result.stdout


def test_only_the_worker_is_deployed_with_retry_and_dead_letter(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    [fn] = gcloud(calls, "functions", "deploy")
    assert "--trigger-http" not in fn and "--retry" in fn
    assert flag(fn, "--trigger-topic") == "dt-direct-events"
    assert "DT_DELIVERY=direct" in flag(fn, "--set-env-vars")
    [update] = gcloud(calls, "pubsub", "subscriptions", "update")
    assert update[4] == "projects/p/subscriptions/eventarc-sub"
    assert flag(update, "--dead-letter-topic") == "dt-direct-events-dead-letter"
    assert flag(update, "--max-delivery-attempts") == "5"


def test_dt_credentials_wire_the_connector(tmp_path):
    result, calls = deploy(
        tmp_path,
        DTCONNECTOR=str(tmp_path / "bin" / "dtconnector"),
        **DT_CREDENTIALS,
    )
    assert result.returncode == 0, result.stderr
    [apply] = [c for c in calls if c[0] == "dtconnector"]
    assert flag(apply, "--type") == "GOOGLE_CLOUD_PUBSUB"
    assert flag(apply, "--pubsub-topic") == "projects/p/topics/dt-direct-events"
    assert flag(apply, "--project") == "proj-1"


def test_organization_id_is_required(tmp_path):
    result, calls = deploy(tmp_path, DT_ORGANIZATION_ID="")
    assert result.returncode != 0 and "DT_ORGANIZATION_ID" in result.stderr
    assert not gcloud(calls, "pubsub")


def test_builds_as_the_dedicated_build_service_account(tmp_path):
    result, calls = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    [fn] = gcloud(calls, "functions", "deploy")
    account = "dt-connector-build@p.iam.gserviceaccount.com"
    assert flag(fn, "--build-service-account") == f"projects/p/serviceAccounts/{account}"
    build_roles = {
        flag(c, "--role")
        for c in gcloud(calls, "projects", "add-iam-policy-binding")
        if flag(c, "--member") == f"serviceAccount:{account}"
    }
    assert "roles/cloudbuild.builds.builder" in build_roles


def test_a_runtime_past_end_of_life_is_refused(tmp_path):
    result, calls = deploy(tmp_path, DT_TODAY="2029-04-02")  # python312's end of life on Cloud Run functions
    assert result.returncode != 0 and "python312" in result.stderr and "end of life" in result.stderr
    assert not gcloud(calls, "functions") and not gcloud(calls, "services")


def test_dry_run_needs_no_login_and_prints_every_command(tmp_path):
    result, calls = run_script(SCRIPT, tmp_path, [], [], {"MODE": "direct", "DT_ORGANIZATION_ID": "org-abc", "DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("DRY-RUN: gcloud ")]
    assert any(" functions deploy dt-direct-process " in line for line in printed)
    assert any(" pubsub subscriptions update " in line for line in printed)
    assert calls == []
