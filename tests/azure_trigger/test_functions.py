"""The Azure entry points on Azurite: request shapes, responses, settings, the queue format."""

from __future__ import annotations

import base64
import json
import os

import pytest

from azure_trigger.clients import DEVELOPMENT_STORAGE, AzureConfig
from azure_trigger.function_app import AZURE_MAX_BODY_BYTES
from core.config import ConfigError
from core.keys import store_key
from tests.dt import SECRET, event_body, event_id_of, signed
from tests.platforms.azure import call, free_port, connection_string, functions_by_name, http_request


def _padded(size: int) -> bytes:
    """A valid event body of exactly `size` bytes."""
    base = event_body(labels={"pad": ""})
    body = event_body(labels={"pad": "x" * (size - len(base))})
    assert len(body) == size
    return body


def test_raw_body_bytes_are_verified_and_queued_unchanged(azure):
    # Non-ASCII and odd spacing: re-serialised JSON would not match the signature.
    body = '{"event": {"eventId": "e-utf8", "targetName": "projects/p/devices/d", "eventType": "touch", ' \
        '"data": {"touch": {"updateTime": "2026-11-22T10:00:00Z"}}, "timestamp": "2026-11-22T10:00:00Z"},' \
        '  "labels": {"room": "Møterom Ø"}}'.encode()
    reply = azure.deliver(body, signed(body))
    assert reply.status == 202, reply.body
    [message] = azure.raw_queue.peek_messages()
    assert base64.b64decode(message.content, validate=True) == body  # base64, as the trigger expects


def test_response_is_json_with_content_type(azure):
    body = event_body()
    reply = azure.deliver(body, signed(body))
    assert reply.status == 202
    assert reply.headers["Content-Type"].startswith("application/json")
    assert json.loads(reply.body) == {"status": "accepted", "eventId": event_id_of(body)}


def test_405_carries_allow_post(azure):
    reply = azure.deliver(b"", {}, method="GET")
    assert reply.status == 405
    assert {k.lower(): v for k, v in reply.headers.items()}["allow"] == "POST"


@pytest.mark.parametrize("path", ["/", "/dt", "/a/b/c", "/dt?x=1"])
def test_any_path_reaches_ingest(azure, path):
    body = event_body()
    assert azure.deliver(body, signed(body), path=path).status == 202


def test_headers_arrive_lower_cased_and_repeated_ones_joined(azure):
    request = http_request("POST", b"{}", [("X-Dt-Signature", "a"), ("x-dt-signature", "b"), ("X-Api-Key", "k")], "/")
    assert dict(request.headers) == {"x-dt-signature": "a, b", "x-api-key": "k"}
    body = event_body()
    token = signed(body)["X-Dt-Signature"]
    assert azure.deliver(body, [("X-Dt-Signature", token), ("X-Dt-Signature", token)]).status == 401


def test_default_body_limit_fits_a_queue_message(azure):
    """48 KiB of body is 64 KiB of base64: the largest a Storage queue message may be."""
    body = _padded(AZURE_MAX_BODY_BYTES)
    assert azure.deliver(body, signed(body)).status == 202
    assert azure.queue_depth() == 1
    over = _padded(AZURE_MAX_BODY_BYTES + 1)
    reply = azure.deliver(over, signed(over))
    assert reply.status == 413
    assert reply.json["limit"] == AZURE_MAX_BODY_BYTES


def test_dt_max_body_bytes_overrides_the_azure_default(make_azure):
    azure = make_azure(DT_MAX_BODY_BYTES="2000")
    body = _padded(2001)
    assert azure.deliver(body, signed(body)).status == 413
    body = _padded(2000)
    assert azure.deliver(body, signed(body)).status == 202


def test_missing_connection_string_is_503_naming_the_setting(make_azure):
    azure = make_azure()
    os.environ.pop("AzureWebJobsStorage")
    azure.module.reset()
    body = event_body()
    reply = azure.deliver(body, signed(body))
    assert reply.status == 503
    assert "AzureWebJobsStorage" in reply.json["reason"]
    assert reply.headers.get("Retry-After")


def test_malformed_connection_string_is_503_without_echoing_it(make_azure):
    azure = make_azure()
    os.environ["AzureWebJobsStorage"] = "AccountKey=hunter2-not-a-connection-string"
    azure.module.reset()
    body = event_body()
    reply = azure.deliver(body, signed(body))
    assert reply.status == 503
    assert "hunter2" not in reply.body


def test_dt_storage_connection_overrides_azure_web_jobs_storage(make_azure, azurite):
    dead = connection_string(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    azure = make_azure()
    os.environ["AzureWebJobsStorage"] = dead
    os.environ["DT_STORAGE_CONNECTION"] = azurite.connection
    azure.module.reset()
    body = event_body()
    assert azure.deliver(body, signed(body)).status == 202


def test_config_defaults_and_development_storage_shorthand():
    config = AzureConfig.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert config.connection == DEVELOPMENT_STORAGE
    assert (config.queue_name, config.dedup_table, config.state_table) == ("dt-events", "dtevents", "dtdevicestate")
    assert "AccountKey" not in repr(config)
    with pytest.raises(ConfigError, match="AzureWebJobsStorage"):
        AzureConfig.from_env({})


def test_queue_and_tables_are_created_on_first_use(azure):
    azure.raw_queue.delete_queue()
    assert azure.claim_store.get("never-written") is None  # no table yet: absent, not an error
    assert azure.state_store.get_device("nobody") == []
    body = event_body()
    assert azure.deliver(body, signed(body)).status == 202
    assert azure.queue_depth() == 1
    azure.drain()
    assert azure.device_state("dev1")["temperature"].event_id == event_id_of(body)


def test_process_accepts_the_body_as_str_or_bytes(azure, seen):
    from azure.functions.queue import QueueMessage

    process = functions_by_name()["process"]
    one, two = event_body(), event_body()
    call(process, QueueMessage(id="1", body=one.decode(), dequeue_count=1, pop_receipt="r"))
    call(process, QueueMessage(id="2", body=two, dequeue_count=1, pop_receipt="r"))
    assert [e.event_id for e in seen] == [event_id_of(one), event_id_of(two)]


def test_process_raises_on_a_poison_message_so_the_host_retries_then_poisons(azure):
    azure.raw_queue.send_message(base64.b64encode(b"not an event").decode())
    azure.drain()
    poisoned = azure.poison_queue.peek_messages()
    assert [base64.b64decode(m.content) for m in poisoned] == [b"not an event"]
    assert azure.queue_depth() == 0


def test_signature_secret_from_app_settings_is_required(make_azure):
    azure = make_azure(DT_SIGNATURE_SECRET=None)
    body = event_body()
    reply = azure.deliver(body, signed(body))
    assert reply.status == 503 and SECRET not in reply.body


def test_claim_key_is_the_partition_key(azure):
    body = event_body(event_id="a/b#c?")  # hostile for Table Storage keys
    assert azure.deliver(body, signed(body)).status == 202
    key = store_key("a/b#c?")
    entity = azure.claim_store.table.client.get_entity(key, "claim")
    assert entity["status"] == "COMPLETED"
