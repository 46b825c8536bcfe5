"""Direct delivery on Azure (azure_trigger/direct_app.py).

Service Bus and Event Hubs have no stand-in on the package registries (Microsoft's
emulators ship as container images), so the functions are driven with the
azure-functions library's own `ServiceBusMessage` / `EventHubEvent` types, their binding
metadata is checked as the host would index it, and the ledger, state and poison queue
are real Table Storage / Storage queues on Azurite.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timezone

import azure.functions as func
import pytest

from azure_trigger import direct_app
from core import on
from core.worker import EventInFlight
from tests.dt import event_body, event_id_of


def functions(kind: str) -> dict:
    return {f.get_function_name(): f for f in direct_app.build(kind).get_functions()}


def hub_event(body: bytes, n: int = 1) -> func.EventHubEvent:
    return func.EventHubEvent(
        body=body, sequence_number=n, partition_key=None, enqueued_time=datetime(2026, 11, 22, tzinfo=timezone.utc)
    )


# --- binding metadata (what the host indexes) ---------------------------------------------


def test_service_bus_mode_registers_only_a_topic_subscription_trigger():
    fns = functions("servicebus")
    assert set(fns) == {"process_servicebus"}
    [binding] = json.loads(fns["process_servicebus"].get_function_json())["bindings"]
    assert binding == {
        "direction": "IN",
        "type": "serviceBusTrigger",
        "name": "msg",
        "connection": "DT_SERVICEBUS",
        "topicName": "%DT_SERVICEBUS_TOPIC%",
        "subscriptionName": "%DT_SERVICEBUS_SUBSCRIPTION%",
    }
    import inspect

    params = inspect.signature(fns["process_servicebus"].get_user_function()).parameters
    assert params["msg"].annotation is func.ServiceBusMessage  # a class, not a string


def test_event_hub_mode_registers_a_batch_trigger_with_a_bounded_retry_policy():
    fns = functions("eventhub")
    assert set(fns) == {"process_eventhub"}
    f = fns["process_eventhub"]
    [binding] = json.loads(f.get_function_json())["bindings"]
    assert binding["type"] == "eventHubTrigger" and binding["cardinality"] == "MANY"
    assert binding["eventHubName"] == "%DT_EVENTHUB_NAME%" and binding["connection"] == "DT_EVENTHUB"
    retry = f.get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff" and retry["max_retry_count"] == "5"  # bounded, not -1


def test_http_mode_app_is_unchanged_and_unknown_kinds_are_refused():
    from tests.platforms.azure import functions_by_name

    assert set(functions_by_name()) == {"ingest", "process", "sweep"}
    with pytest.raises(ValueError, match="DT_AZURE_DIRECT"):
        direct_app.build("carrier-pigeon")


# --- Service Bus: one message per call, redelivery is Service Bus's ---------------------


@pytest.fixture
def direct(make_azure):
    return make_azure(DT_DELIVERY="direct")


def test_service_bus_duplicates_in_any_shape_run_handlers_once(direct, seen):
    process = functions("servicebus")["process_servicebus"].get_user_function()
    body = event_body(device="sb-dev")
    for raw in (body, base64.b64encode(body), json.dumps(json.loads(body)["event"]).encode()):
        process(msg=func.ServiceBusMessage(body=raw))
    assert [e.event_id for e in seen] == [event_id_of(body)]
    assert direct.device_state("sb-dev")["temperature"].event_id == event_id_of(body)


def test_service_bus_failure_raises_so_the_message_is_redelivered(direct):
    process = functions("servicebus")["process_servicebus"].get_user_function()
    calls = []

    @on("*")
    def flaky(event):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("down")

    body = event_body()
    with pytest.raises(Exception):
        process(msg=func.ServiceBusMessage(body=body))
    process(msg=func.ServiceBusMessage(body=body))  # Service Bus's redelivery
    assert calls == [1, 1]


def test_service_bus_non_dt_message_raises_for_the_dead_letter_queue(direct, caplog):
    process = functions("servicebus")["process_servicebus"].get_user_function()
    with caplog.at_level(logging.ERROR, logger="dtconnector"), pytest.raises(Exception, match="neither"):
        process(msg=func.ServiceBusMessage(body=b'{"hello": "world"}'))
    assert any("not a DT event" in r.getMessage() for r in caplog.records)


# --- Event Hubs: batches, no redelivery: retry here, then the poison queue ---------------


@pytest.fixture
def poison(direct):
    from azure.storage.queue import QueueClient

    name = f"dt-direct-poison-{direct.queue_name[-8:]}"
    import os

    os.environ["DT_POISON_QUEUE"] = name
    client = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], name)
    yield client
    import contextlib

    with contextlib.suppress(Exception):
        client.delete_queue()


def poisoned(client) -> list[dict]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def run_batch(events, sleeps=None):
    """The function as the host calls it, with the in-process backoff recorded, not slept."""
    from azure_trigger import function_app

    direct_app.process_batch(events, function_app.worker(), direct_app.poison_queue().put, (sleeps if sleeps is not None else []).append)


def test_event_hub_batch_handles_each_event_once_even_when_replayed(direct, poison, seen):
    a, b = event_body(device="eh-a"), event_body(device="eh-b")
    batch = [hub_event(a, 1), hub_event(base64.b64encode(b), 2), hub_event(a, 3)]  # DT duplicated `a`
    functions("eventhub")["process_eventhub"].get_user_function()(events=batch)
    assert sorted(e.device_id for e in seen) == ["eh-a", "eh-b"]
    run_batch(batch)  # the host replays the batch (crash before its checkpoint)
    assert len(seen) == 2
    assert poisoned(poison) == []


def test_event_hub_failing_event_is_retried_then_poisoned_and_the_batch_moves_on(direct, poison):
    calls = {"bad": 0, "good": 0}

    @on("*")
    def picky(event):
        if event.device_id == "bad":
            calls["bad"] += 1
            raise RuntimeError("cannot handle")
        calls["good"] += 1

    bad, good = event_body(device="bad"), event_body(device="good")
    sleeps: list[float] = []
    run_batch([hub_event(bad, 7), hub_event(good, 8)], sleeps)
    from azure_trigger import function_app

    attempts = function_app.worker().settings.max_attempts
    assert calls == {"bad": attempts, "good": 1}
    assert len(sleeps) == attempts - 1
    [record] = poisoned(poison)
    assert record["sequenceNumber"] == 7 and "failed" in record["reason"]
    assert json.loads(record["body"])["event"]["eventId"] == event_id_of(bad)


def test_event_hub_non_dt_event_is_poisoned_at_once(direct, poison):
    sleeps: list[float] = []
    run_batch([hub_event(b"\xff\xfe not json", 3)], sleeps)
    [record] = poisoned(poison)
    assert "not a DT event" in record["reason"]
    assert base64.b64decode(record["bodyBase64"]) == b"\xff\xfe not json"
    assert sleeps == []


def test_event_hub_poison_store_down_raises_for_the_retry_policy(direct, poison, seen):
    from core.ports import StoreError

    def broken(event, reason):
        raise StoreError("queue send failed")

    from azure_trigger import function_app

    with pytest.raises(StoreError):
        direct_app.process_batch([hub_event(b"nope", 1)], function_app.worker(), broken, lambda s: None)


def test_event_hub_event_held_by_another_worker_is_left_for_a_replay(direct, poison, seen):
    from core.claims import Claims
    from core.worker import WORKER_NAMESPACE

    body = event_body(device="held")
    Claims(direct.claim_store, WORKER_NAMESPACE).acquire(event_id_of(body), 300)  # another instance holds it
    other = event_body(device="free")
    with pytest.raises(EventInFlight):
        run_batch([hub_event(body, 1), hub_event(other, 2)])
    assert [e.device_id for e in seen] == ["free"]  # the rest of the batch was handled
    assert poisoned(poison) == []
