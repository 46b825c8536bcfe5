"""`dtconnector connector …` against the DT API stand-in, through DT's own client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.handlers import registry
from dtconnector.cli import main
from tests.dtcloud.conftest import PROJECT, add_history
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
URL = "https://receiver.example.com/dt"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def the_connector(standin, name: str = "recv") -> dict:
    matches = [c for c in standin.projects[PROJECT].connectors.values() if c["displayName"] == name]
    assert len(matches) == 1
    return matches[0]


@pytest.fixture
def clean_registry():
    registry.clear()
    yield
    registry.clear()


def test_apply_creates_then_is_idempotent_and_diffs(dt_env, standin, capsys):
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "temperature",
                       "--labels", "room")
    assert code == 0 and "+ create HTTP_PUSH connector 'recv'" in out
    conn = the_connector(standin)
    assert conn["events"] == ["temperature"] and conn["labels"] == ["room"]
    assert conn["httpConfig"]["url"] == URL
    assert conn["httpConfig"]["signatureSecret"] == dt_env["DT_SIGNATURE_SECRET"]

    writes = [r for r in standin.requests if r[0] in ("POST", "PATCH")]
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "temperature",
                       "--labels", "room")
    assert code == 0 and "nothing to change" in out
    assert [r for r in standin.requests if r[0] in ("POST", "PATCH")] == writes  # no write at all

    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL + "2",
                       "--events", "temperature,touch", "--labels", "room", "--header", "X-Api-Key:k-123")
    assert code == 0
    assert f"~ httpConfig.url: {URL} -> {URL}2" in out
    assert "~ events: [temperature] -> [temperature, touch]" in out
    assert "~ httpConfig.headers.X-Api-Key: (set)" in out
    assert "k-123" not in out
    assert len(standin.projects[PROJECT].connectors) == 1
    assert the_connector(standin)["httpConfig"]["headers"] == {"X-Api-Key": "k-123"}


def test_secret_is_never_printed_only_set_or_changed(dt_env, standin, capsys, monkeypatch, tmp_path):
    secret = dt_env["DT_SIGNATURE_SECRET"]
    code, out, err = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch")
    assert code == 0 and "signatureSecret: (set)" in out and secret not in out + err
    new = tmp_path / "new-secret"
    new.write_text("rotated-secret-value-0123456789\n")
    code, out, err = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch",
                         "--secret-file", str(new))
    assert code == 0 and "~ httpConfig.signatureSecret: (changed)" in out
    assert "rotated-secret-value" not in out + err
    assert the_connector(standin)["httpConfig"]["signatureSecret"] == "rotated-secret-value-0123456789"
    for cmd in (("show", "--name", "recv"), ("list", "--json")):
        code, out, err = run(capsys, "connector", *cmd)
        assert code == 0 and "rotated-secret-value" not in out + err and secret not in out + err


def test_asymmetric_mode_sets_no_secret(dt_env, standin, capsys, monkeypatch):
    monkeypatch.setenv("DT_SIGNATURE_MODE", "asymmetric")
    code, _, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch")
    assert code == 0 and the_connector(standin)["httpConfig"]["signatureSecret"] == ""


def test_no_secret_is_a_usage_error(dt_env, standin, capsys, monkeypatch):
    monkeypatch.delenv("DT_SIGNATURE_SECRET")
    code, _, err = run(capsys, "connector", "apply", "--name", "recv", "--url", URL)
    assert code == 2 and "DT_SIGNATURE_SECRET" in err and not standin.projects[PROJECT].connectors


def test_dry_run_changes_nothing(dt_env, standin, capsys):
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch", "--dry-run")
    assert code == 0 and "+ create" in out and "dry run" in out
    assert not standin.projects[PROJECT].connectors


def test_default_event_filter_comes_from_registered_handlers(dt_env, standin, capsys, monkeypatch, tmp_path,
                                                             clean_registry):
    (tmp_path / "h_types.py").write_text(textwrap.dedent("""
        from core import on
        @on("temperature")
        def a(event): pass
        @on("touch")
        def b(event): pass
    """))
    (tmp_path / "h_all.py").write_text("from core import on\n@on('*')\ndef c(event): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DT_HANDLERS", "h_types")
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL)
    assert code == 0 and the_connector(standin)["events"] == ["temperature", "touch"]
    assert "event filter: temperature, touch (the event types your handlers name)" in out
    # an existing connector's filter is the user's: kept unless --events is given
    monkeypatch.setenv("DT_HANDLERS", "h_types,h_all")
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL)
    assert code == 0 and the_connector(standin)["events"] == ["temperature", "touch"]
    assert "nothing to change" in out and "events [temperature, touch]" in out.split("kept as DT has them:")[1]
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--events", "all")
    assert code == 0 and the_connector(standin)["events"] == []  # all types
    assert "~ events: [temperature, touch] -> [] (all)" in out


def test_a_broken_handler_module_is_one_line(dt_env, standin, capsys, monkeypatch, clean_registry):
    monkeypatch.setenv("DT_HANDLERS", "no_such_module_here")
    code, out, err = run(capsys, "connector", "apply", "--name", "recv", "--url", URL)
    assert code == 2 and "no_such_module_here" in err and len(err.strip().splitlines()) == 1
    assert not standin.projects[PROJECT].connectors


@pytest.mark.parametrize("kind,flags,key,expected", [
    ("AWS_SQS", ["--sqs-queue-url", "https://sqs.eu-west-1.amazonaws.com/1/q", "--aws-role-arn",
                 "arn:aws:iam::1:role/dt", "--audience", "aud-1"],
     "awsSqsConfig", {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q", "awsRoleArn": "arn:aws:iam::1:role/dt",
                      "audience": "aud-1"}),
    ("GOOGLE_CLOUD_PUBSUB", ["--pubsub-topic", "projects/p/topics/t", "--audience", "a"],
     "pubsubConfig", {"topic": "projects/p/topics/t", "audience": "a"}),
    ("AZURE_SERVICE_BUS", ["--azure-url", "sb://ns/topic", "--azure-tenant-id", "t", "--azure-client-id", "c"],
     "azureServiceBusConfig", {"url": "sb://ns/topic", "authenticationConfig": {"tenantId": "t", "clientId": "c"}}),
    ("AZURE_EVENT_HUB", ["--azure-url", "sb://ns/hub", "--azure-tenant-id", "t", "--azure-client-id", "c"],
     "azureEventHubConfig", {"url": "sb://ns/hub", "authenticationConfig": {"tenantId": "t", "clientId": "c"}}),
])
def test_native_connector_types(dt_env, standin, capsys, kind, flags, key, expected):
    code, out, err = run(capsys, "connector", "apply", "--name", "q", "--type", kind, "--events", "touch", *flags)
    assert code == 0, err
    conn = the_connector(standin, "q")
    assert conn["type"] == kind and conn[key] == expected
    code, out, _ = run(capsys, "connector", "apply", "--name", "q", "--type", kind, "--events", "touch", *flags)
    assert code == 0 and "nothing to change" in out


def test_native_type_missing_flag_is_usage_error(dt_env, standin, capsys):
    code, _, err = run(capsys, "connector", "apply", "--name", "q", "--type", "AWS_SQS",
                       "--sqs-queue-url", "https://sqs/x")
    assert code == 2 and "--aws-role-arn" in err


def test_list_show_enable_disable_delete(dt_env, standin, capsys, monkeypatch):
    run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch")
    cid = the_connector(standin)["name"].rsplit("/", 1)[-1]
    code, out, _ = run(capsys, "connector", "list")
    assert code == 0 and cid in out and "ACTIVE" in out
    code, out, _ = run(capsys, "connector", "show", "--id", cid)
    assert code == 0 and json.loads(out)["displayName"] == "recv"
    assert run(capsys, "connector", "disable", "--name", "recv")[0] == 0
    assert the_connector(standin)["status"] == "USER_DISABLED"
    assert run(capsys, "connector", "enable", "--name", "recv")[0] == 0
    assert the_connector(standin)["status"] == "ACTIVE"
    # delete asks; with no terminal and no --yes it refuses
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    code, _, err = run(capsys, "connector", "delete", "--name", "recv")
    assert code == 2 and "--yes" in err and standin.projects[PROJECT].connectors
    code, out, _ = run(capsys, "connector", "delete", "--name", "recv", "--yes")
    assert code == 0 and not standin.projects[PROJECT].connectors


def test_sync_delivers_signed_and_metrics_count_it(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    add_history(standin, devices=2, hours=3)
    run(capsys, "connector", "apply", "--name", "recv", "--url", serve.url, "--events", "temperature,touch")
    code, out, _ = run(capsys, "connector", "sync", "--name", "recv")
    assert code == 0
    wait_until(lambda: len(serve.seen()) == 4, what="4 latest events (2 devices x 2 types)")
    state = serve.state()
    assert sorted(state) == ["dev00", "dev01"]
    assert state["dev00"]["temperature"]["data"]["temperature"]["value"] == 21.0  # the newest (h=1)
    code, out, _ = run(capsys, "connector", "metrics", "--name", "recv", "--json")
    assert code == 0 and json.loads(out)["successCount"] == 4 and json.loads(out)["errorCount"] == 0


def test_status_healthy_then_disabled_and_system_disabled_exit_1(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    run(capsys, "connector", "apply", "--name", "recv", "--url", serve.url, "--events", "touch")
    code, out, _ = run(capsys, "connector", "status", "--name", "recv")
    assert code == 0 and "healthy" in out and "URL answers" in out
    run(capsys, "connector", "disable", "--name", "recv")
    code, out, _ = run(capsys, "connector", "status", "--name", "recv")
    assert code == 1 and "USER_DISABLED" in out
    run(capsys, "connector", "enable", "--name", "recv")
    standin.set_status(PROJECT, the_connector(standin)["name"].rsplit("/", 1)[-1], "SYSTEM_DISABLED")
    code, out, _ = run(capsys, "connector", "status", "--name", "recv", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["status"] == "SYSTEM_DISABLED" and not doc["healthy"]
    assert any("backfill" in p for p in doc["problems"])


def test_status_degraded_when_deliveries_fail_or_url_is_dead(dt_env, standin, capsys, make_serve):
    serve = make_serve().start()
    add_history(standin, devices=1, hours=1)
    run(capsys, "connector", "apply", "--name", "recv", "--url", serve.url, "--events", "touch")
    serve.stop()
    run(capsys, "connector", "sync", "--name", "recv")
    wait_until(lambda: standin.metrics(the_connector(standin)["name"].rsplit("/", 1)[-1])["metrics"]["errorCount"] == 1)
    code, out, _ = run(capsys, "connector", "status", "--name", "recv")
    assert code == 1 and "DEGRADED" in out and "does NOT answer" in out and "1 of 1 deliveries failed" in out


# --- failures: one clear line, exit 2, never a traceback ------------------------------------


def test_bad_credentials_exit_2(dt_env, standin, capsys, monkeypatch):
    monkeypatch.setenv("DT_SERVICE_ACCOUNT_SECRET", "not-the-secret")
    code, out, err = run(capsys, "connector", "list")
    assert code == 2 and "refused the service-account credentials" in err
    assert "not-the-secret" not in out + err
    assert not standin.tokens  # the stand-in really refused the client's JWT


def test_missing_credentials_exit_2(dt_env, capsys, monkeypatch):
    monkeypatch.delenv("DT_SERVICE_ACCOUNT_KEY_ID")
    code, _, err = run(capsys, "connector", "list")
    assert code == 2 and "DT_SERVICE_ACCOUNT_KEY_ID" in err


def test_unknown_project_and_connector_exit_2(dt_env, standin, capsys):
    code, _, err = run(capsys, "connector", "list", "--project", "nope")
    assert code == 2 and "project nope" in err
    code, _, err = run(capsys, "connector", "status", "--name", "ghost")
    assert code == 2 and "no connector named 'ghost'" in err
    code, _, err = run(capsys, "connector", "show", "--id", "ghost-id")
    assert code == 2 and "connector ghost-id" in err


def test_rate_limit_and_5xx_are_retried(dt_env, standin, capsys):
    standin.fail(429, 1)
    standin.fail(503, 1)
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch")
    assert code == 0 and the_connector(standin)
    statuses_consumed = not standin._faults
    assert statuses_consumed


def test_dt_outage_exit_2_in_a_subprocess_without_traceback(dt_env, standin):
    standin.down = True
    proc = subprocess.run([sys.executable, "-m", "dtconnector", "connector", "status", "--name", "x"],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "DT's API is failing at" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len(standin.requests) > 1  # the client retried before giving up


def test_update_patches_only_what_differs_and_keeps_the_rest(dt_env, standin, capsys, monkeypatch):
    run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch")
    bodies = []
    from dtcloud.client import Client

    real = Client.call

    def spy(self, method, path, **kw):
        if method == "PATCH":
            bodies.append(kw.get("body"))
        return real(self, method, path, **kw)

    monkeypatch.setattr(Client, "call", spy)
    run(capsys, "connector", "apply", "--name", "recv", "--events", "touch,temperature")
    assert bodies == [{"events": ["temperature", "touch"]}]
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--header", "A:b")
    assert list(bodies[-1]) == ["httpConfig"] and bodies[-1]["httpConfig"]["headers"] == {"A": "b"}
    assert bodies[-1]["httpConfig"]["url"] == URL  # the config object is sent whole, with what DT had
    assert "kept as DT has them: " in out and "events [temperature, touch]" in out and "httpConfig.url " + URL in out
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch,temperature")
    assert "nothing to change" in out and the_connector(standin)["httpConfig"]["headers"] == {"A": "b"}  # kept
    assert "httpConfig.headers.A (set)" in out
    run(capsys, "connector", "apply", "--name", "recv", "--remove-header", "A")
    assert bodies[-1]["httpConfig"]["headers"] == {}  # a header removed only when asked
    assert the_connector(standin)["httpConfig"]["headers"] == {}


def test_apply_changes_only_the_fields_given_and_prints_the_rest_as_kept(dt_env, standin, capsys):
    run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch", "--labels", "room",
        "--header", "X-Api-Key:k1", "--disabled")
    before = dict(the_connector(standin))
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--url", URL + "/v2")
    after = the_connector(standin)
    assert code == 0 and after["httpConfig"]["url"] == URL + "/v2"
    assert (after["status"], after["labels"], after["events"]) == ("USER_DISABLED", ["room"], ["touch"])
    assert after["httpConfig"]["headers"] == {"X-Api-Key": "k1"}
    assert after["httpConfig"]["signatureSecret"] == before["httpConfig"]["signatureSecret"]
    kept = [line for line in out.splitlines() if line.startswith("kept as DT has them: ")]
    assert len(kept) == 1
    for field in ("status USER_DISABLED", "labels [room]", "events [touch]", "httpConfig.headers.X-Api-Key (set)"):
        assert field in kept[0]
    assert "k1" not in out and "httpConfig.url" not in kept[0]
    code, out, _ = run(capsys, "connector", "apply", "--name", "recv", "--enabled", "--labels", "")
    after = the_connector(standin)
    assert (after["status"], after["labels"]) == ("ACTIVE", [])
    assert "~ status: USER_DISABLED -> ACTIVE" in out and "~ labels: [room] -> []" in out


def test_header_values_from_a_file_or_the_environment(dt_env, standin, capsys, monkeypatch, tmp_path):
    key = tmp_path / "api-key"
    key.write_text("file-secret-123\n")
    monkeypatch.setenv("PROXY_KEY", "env-secret-456")
    code, out, err = run(capsys, "connector", "apply", "--name", "recv", "--url", URL, "--events", "touch",
                         "--header-file", f"X-File:{key}", "--header-env", "X-Env:PROXY_KEY", "--header", "X-Plain:p")
    assert code == 0, err
    assert the_connector(standin)["httpConfig"]["headers"] == {"X-File": "file-secret-123", "X-Env": "env-secret-456",
                                                                "X-Plain": "p"}
    assert "secret-123" not in out + err and "secret-456" not in out + err
    for bad, why in ((["--header-env", "X-Env:NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE"),
                     (["--header-file", f"X-File:{tmp_path / 'missing'}"], "cannot read"),
                     (["--header", "no colon"], "NAME:VALUE")):
        with pytest.raises(SystemExit) as exit_:
            main(["connector", "apply", "--name", "recv", *bad])
        assert exit_.value.code == 2 and why in capsys.readouterr().err


def test_http_urls_are_refused_as_dt_refuses_them(dt_env, standin, capsys, monkeypatch):
    code, _, err = run(capsys, "connector", "apply", "--name", "recv", "--url", "http://rx.example.com/")
    assert code == 2 and err.count("\n") == 1
    assert "DT delivers only to https:// URLs: refusing --url http://rx.example.com/" in err
    assert not standin.projects[PROJECT].connectors and not [r for r in standin.requests if r[0] == "POST"]
    # a loopback URL passes only while the DT API is on loopback (the stand-in, which delivers there)
    code, _, err = run(capsys, "connector", "apply", "--name", "recv", "--url", "http://127.0.0.1:9/", "--events", "touch")
    assert code == 0, err
    monkeypatch.setenv("DT_API_URL", standin.api_url.replace("127.0.0.1", "localhost"))
    assert run(capsys, "connector", "apply", "--name", "recv", "--url", "http://127.0.0.1:8/")[0] == 0
    monkeypatch.setenv("DT_API_URL", "https://api.example.invalid/v2")
    code, _, err = run(capsys, "connector", "apply", "--name", "recv", "--url", "http://127.0.0.1:9/")
    assert code == 2 and "only to https://" in err
