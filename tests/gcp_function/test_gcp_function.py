"""What is specific to Google Cloud Functions: request shapes through functions-framework,
CloudEvent shapes, error translation of the Firestore/Pub/Sub adapters, configuration,
cold-start imports, the bundle and deploy.sh. Runs on Google's emulators (skips without)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.keys import store_key
from core.ports import COMPLETED, Claim, DeviceState, QueueError, StoreError
from tests.dt import BASE_ENV, event_body, event_id_of, signed
from tests.platforms.base import running
from tests.platforms.gcp import STAND_IN as GCP

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group(GCP.xdist_group)  # the emulators: on the contract suite's worker


@pytest.fixture(scope="module")
def gcp():
    with running(GCP) as stand_in:  # skips with the reason when java or the emulators are absent
        yield stand_in


@pytest.fixture
def h(gcp):
    return gcp.harness(dict(BASE_ENV))


def _post(h, body, headers, **kw):
    h._activate()
    return h._si.ingest_app.test_client().post("/", data=body, headers=headers, **kw)


# -- ingest: request shapes and responses ----------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded"],
)
def test_signature_is_checked_on_the_exact_bytes_whatever_the_content_type(h, content_type):
    # Odd spacing and non-ASCII: re-serialised JSON would not match the signed checksum.
    doc = json.loads(event_body(labels={"name": "Büro 3"}))
    body = json.dumps(doc, indent=3, ensure_ascii=False).encode("utf-8")
    headers = {"X-Dt-Signature": signed(body)["X-Dt-Signature"]}
    if content_type:
        headers["Content-Type"] = content_type
    resp = _post(h, body, headers)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert h.queue_depth() == 1


def test_response_is_json_with_retry_after_on_503(h):
    body = event_body()
    with h.broken("claims"):
        resp = _post(h, body, signed(body))
    assert resp.status_code == 503
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Retry-After"] == "5"
    assert resp.get_json() == {"error": "unavailable", "reason": "event store unavailable"}
    ok = _post(h, body, signed(body))
    assert ok.headers["Content-Type"] == "application/json"
    assert ok.get_json() == {"status": "accepted", "eventId": event_id_of(body)}


def test_405_names_the_allowed_method(h):
    resp = h._si.ingest_app.test_client().get("/")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"


def test_queued_message_is_the_verified_body_with_an_event_id_attribute(h):
    body = event_body()
    assert _post(h, body, signed(body)).status_code == 202
    assert h.queue_depth() == 1
    [received] = h._prefetched.values()
    assert received.message.data == body
    assert received.message.attributes["eventId"] == event_id_of(body)


def test_dedup_record_has_a_ttl_timestamp_and_the_exact_expiry(h):
    from google.cloud import firestore

    body = event_body()
    assert _post(h, body, signed(body)).status_code == 202
    doc = (
        firestore.Client()
        .collection(h.env["DT_DEDUP_COLLECTION"])
        .document(store_key(event_id_of(body)))
        .get()
        .to_dict()
    )
    assert doc["status"] == COMPLETED
    assert isinstance(doc["expiresAtSeconds"], float)
    # expiresAt is a Firestore timestamp (what a TTL policy needs), equal to the expiry.
    assert abs(doc["expiresAt"].timestamp() - doc["expiresAtSeconds"]) < 0.001


@pytest.mark.parametrize("missing", [None, "my-topic", "projects/p/topics/"])
def test_missing_or_bad_topic_is_503_and_says_which_setting(gcp, missing):
    h = gcp.harness(dict(BASE_ENV))
    h.env = {**h.env}
    if missing is None:
        del h.env["DT_PUBSUB_TOPIC"]
    else:
        h.env["DT_PUBSUB_TOPIC"] = missing
    gcp.active = None  # re-apply the edited env
    body = event_body()
    resp = _post(h, body, signed(body))
    assert resp.status_code == 503
    assert "DT_PUBSUB_TOPIC" in resp.get_json()["reason"]


# -- process: CloudEvent shapes ----------------------------------------------------------


def _cloud_event(data, **attrs):
    from cloudevents.http import CloudEvent

    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/p/topics/t",
            **attrs,
        },
        data,
    )


def _message_data(text: bytes) -> dict:
    return {"message": {"data": base64.b64encode(text).decode(), "messageId": "1", "attributes": {}}, "subscription": "s"}


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_process_accepts_both_cloud_event_content_modes(h, mode):
    from cloudevents.conversion import to_binary, to_structured

    from core import on

    seen = []

    @on("*")
    def record(event):
        seen.append(event.event_id)

    body = event_body()
    headers, payload = (to_binary if mode == "binary" else to_structured)(_cloud_event(_message_data(body)))
    h._activate()
    resp = h._si.process_app.test_client().post("/", headers=headers, data=payload)
    assert resp.status_code == 200
    assert seen == [event_id_of(body)]


@pytest.mark.parametrize(
    "data",
    [{}, {"message": {}}, {"message": {"data": "***not base64***"}}, {"message": {"data": base64.b64encode(b"\xff\xfe").decode()}}],
    ids=["no-message", "no-data", "not-base64", "not-utf8"],
)
def test_process_raises_on_a_delivery_that_is_not_a_pubsub_message(h, data):
    from gcp_function import main

    h._activate()
    with pytest.raises(main.BadDelivery):
        main.process(_cloud_event(data))


def test_process_raises_for_redelivery_when_a_handler_fails(h):
    from core import on
    from core.worker import HandlerFailed
    from gcp_function import main

    @on("*")
    def fails(event):
        raise RuntimeError("downstream down")

    h._activate()
    with pytest.raises(HandlerFailed):
        main.process(_cloud_event(_message_data(event_body())))


def test_dead_letter_is_done_by_the_subscription_policy(h):
    """The emulator implements dead-letter policies: the harness never republishes."""
    from core import on

    @on("*")
    def always_fails(event):
        raise RuntimeError("always")

    sub = h._si.subscriber.get_subscription(subscription=h.subscription)
    assert sub.dead_letter_policy.max_delivery_attempts == h.max_attempts
    body = event_body()
    h.deliver(body, signed(body))
    h.drain()
    assert h.dead_letters() == [event_id_of(body)]


# -- adapters: error translation and data fidelity ---------------------------------------


@pytest.mark.parametrize("exc_name", ["ServiceUnavailable", "DeadlineExceeded", "PermissionDenied"])
def test_claim_store_translates_sdk_errors(h, exc_name):
    from google.api_core import exceptions

    from tests.platforms.gcp import dead_firestore_client

    from unittest import mock

    store = h.claim_store
    with mock.patch.object(store, "_client", dead_firestore_client(getattr(exceptions, exc_name)("down"))):
        for call in (
            lambda: store.create("k", Claim(COMPLETED, 1.0, "v")),
            lambda: store.get("k"),
            lambda: store.replace("k", "v", Claim(COMPLETED, 1.0, "w")),
            lambda: store.delete("k", "v"),
        ):
            with pytest.raises(StoreError) as info:
                call()
            assert isinstance(info.value.__cause__, getattr(exceptions, exc_name))
            assert "Firestore" in str(info.value)


def test_state_store_translates_sdk_errors(h):
    from unittest import mock

    from google.api_core.exceptions import ServiceUnavailable

    from tests.platforms.gcp import dead_firestore_client

    store = h.state_store
    with mock.patch.object(store, "_client", dead_firestore_client(ServiceUnavailable("down"))):
        with pytest.raises(StoreError):
            store.put_if_newer(DeviceState("d", "co2", 1, "e", "t", {}))
        with pytest.raises(StoreError):
            store.get_device("d")


def test_queue_translates_publish_failure_and_timeout(h):
    from unittest import mock

    from google.api_core.exceptions import ServiceUnavailable

    from gcp_function.pubsub_queue import PubSubQueue

    main = h._activate()
    queue = main.event_queue()
    with mock.patch.object(main.publisher(), "_gapic_publish", side_effect=ServiceUnavailable("down")):
        with pytest.raises(QueueError) as info:
            queue.enqueue("{}", event_id="e")
    assert isinstance(info.value.__cause__, ServiceUnavailable)

    class NeverDone:
        def result(self, timeout=None):
            raise TimeoutError()

    slow = PubSubQueue(mock.Mock(publish=mock.Mock(return_value=NeverDone())), h.topic, deadline_s=0.01)
    with pytest.raises(QueueError, match="not confirmed"):
        slow.enqueue("{}", event_id="e")


def test_a_wedged_publisher_is_replaced_after_an_unexpected_error(h):
    """google-cloud-pubsub can raise AssertionError("Publish after stop() or publish error")
    and stay in that state: the request gets 503 and the next one a fresh client."""
    from unittest import mock

    main = h._activate()
    queue = main.event_queue()
    wedged = main.publisher()
    with mock.patch.object(wedged, "publish", side_effect=AssertionError("Publish after stop() or publish error")):
        with pytest.raises(QueueError, match="publisher failed"):
            queue.enqueue("{}", event_id="e")
        queue.enqueue("{}", event_id="e")  # a new client, not the wedged one
    assert queue._publisher is not wedged


def test_state_keeps_payloads_firestore_could_not_store_as_maps(h):
    data = {"weird": {"": 1, "a.b": [[1, 2], [3]], "big": 2**62, "pi": 3.141592653589793}}
    state = DeviceState("dev/with:odd id", "brandNew", 1_800_000_000_000_000_001, "e1", "ts", data, {"k": "v"})
    assert h.state_store.put_if_newer(state)
    assert h.state_store.get_device("dev/with:odd id") == [state]


# -- cold start, bundle, deploy ----------------------------------------------------------


def test_entry_module_import_loads_no_google_sdk_and_no_jwt():
    code = (
        "import sys; import gcp_function.main\n"
        "bad = [m for m in sys.modules if m.startswith(('google.cloud.firestore', 'google.cloud.pubsub', 'google.api_core', 'grpc', 'jwt'))]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bundle_is_self_contained_and_its_main_imports_from_itself(tmp_path):
    dest = tmp_path / "bundle"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "gcp_function", str(dest)], check=True, capture_output=True)
    for name in ("main.py", "requirements.txt", ".gcloudignore", "handlers.py", "core/receiver.py", "gcp_function/main.py"):
        assert (dest / name).is_file(), name
    assert not (dest / "gcp_function" / "deploy.sh").exists()
    assert not (dest / "gcp_function" / "deploy-direct.sh").exists()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import json, main, core, gcp_function.main as m, handlers\n"
        "import functions_framework._function_registry as r\n"
        "print(json.dumps([main.__file__, core.__file__, m.__file__, handlers.__file__,"
        " r.get_func_signature_type('ingest', None), r.get_func_signature_type('process', None)]))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code, str(dest)], cwd=dest, capture_output=True, text=True, check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    *files, ingest_type, process_type = json.loads(out.stdout)
    for f in files:
        assert Path(f).resolve().is_relative_to(dest.resolve()), f
    assert (ingest_type, process_type) == ("http", "cloudevent")


def test_bundle_requirements_match_the_gcp_extra():
    sys.path.insert(0, str(ROOT / "scripts"))
    import lock  # the lock's reader (tests/deploy/test_locks.py checks the lock itself)

    inputs, pins, _ = lock.read_lock((ROOT / "gcp_function" / "bundle" / "requirements.txt").read_text())
    for package in ("functions-framework", "google-cloud-firestore", "google-cloud-pubsub", "PyJWT[crypto]"):
        assert any(line.startswith(f"{package}>=") for line in inputs), package
    assert {"functions-framework", "google-cloud-firestore", "google-cloud-pubsub", "pyjwt", "cryptography"} <= {
        pin.name for pin in pins}


def test_deploy_script_is_valid_bash_and_stops_clearly_without_gcloud(tmp_path):
    script = ROOT / "gcp_function" / "deploy.sh"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not on PATH")
    subprocess.run([bash, "-n", str(script)], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm", "cat"):
        src = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if src:
            (bin_dir / tool).symlink_to(src)
    out = subprocess.run([bash, str(script)], capture_output=True, text=True, env={"PATH": str(bin_dir)})
    assert out.returncode != 0
    assert "gcloud" in out.stderr and "not installed" in out.stderr


def test_deploy_script_uses_the_required_gcloud_commands():
    # deploy.sh and the steps it shares with deploy-direct.sh (scripts/deploy-gcp-lib.sh)
    text = (ROOT / "gcp_function" / "deploy.sh").read_text() + (ROOT / "scripts" / "deploy-gcp-lib.sh").read_text()
    for needle in (
        "gcloud functions deploy dt-ingest --gen2",
        "--entry-point=ingest --trigger-http --allow-unauthenticated",
        "--set-secrets=\"DT_SIGNATURE_SECRET=$SECRET_NAME:latest\"",
        "gcloud functions deploy dt-process --gen2",
        "--entry-point=process --trigger-topic=\"$TOPIC\" --retry",
        "gcloud firestore fields ttls update expiresAt --collection-group=\"$DEDUP\" --enable-ttl",
        "--dead-letter-topic=\"$DEAD_TOPIC\"",
        "--max-delivery-attempts=\"$MAX_ATTEMPTS\"",
    ):
        assert needle in text, needle
