"""Azure Functions for direct delivery: DT's AZURE_SERVICE_BUS or AZURE_EVENT_HUB Data
Connector publishes into the namespace itself; no HTTP function, no Storage queue.

Registered only in direct mode: the direct deploy writes a root ``function_app.py`` that
imports `app` from here instead of from `function_app`, so the http mode's app is unchanged.
`DT_AZURE_DIRECT` (``servicebus`` or ``eventhub``) picks the one trigger registered.

- `process_servicebus`: Service Bus topic subscription trigger. Returning completes the
  message; raising abandons it, Service Bus redelivers it and, after the subscription's
  max delivery count, moves it to the subscription's dead-letter queue. As in http mode.
- `process_eventhub`: Event Hub trigger, batches. Event Hubs do not redeliver a message:
  the host checkpoints the partition after the function returns, whatever happened. So
  each event is retried here, a few times, and one that keeps failing (or is not a DT
  event) is written to a poison Storage queue (`DT_POISON_QUEUE`) and the batch moves on,
  instead of the partition being retried forever. The worker's ledger records progress
  per event, so a batch replayed after a crash (or by the bounded retry policy below, used
  only when the poison queue itself is down or an event is held by another worker) runs
  no finished handler again.

Both reuse `function_app`'s container (settings with ``DT_DELIVERY=direct``, the Table
Storage ledger and state) and core's Worker unchanged.
"""

# No `from __future__ import annotations`: the Python worker matches bindings against the
# real annotation classes (func.ServiceBusMessage, func.EventHubEvent), not strings.
import base64
import functools
import json
import logging
import os
import time
from typing import Callable, List, Optional

import azure.functions as func

from core.logs import event_log

from . import function_app

KINDS = ("servicebus", "eventhub")
KIND_SETTING = "DT_AZURE_DIRECT"
POISON_SETTING = "DT_POISON_QUEUE"
DEFAULT_POISON_QUEUE = "dt-direct-poison"
#: Seconds between in-process attempts at one Event Hub event (attempt n waits n x this).
RETRY_STEP_S = 1.0

servicebus = func.Blueprint()
eventhub = func.Blueprint()


@servicebus.function_name(name="process_servicebus")
@servicebus.service_bus_topic_trigger(
    arg_name="msg",
    connection="DT_SERVICEBUS",  # identity-based: DT_SERVICEBUS__fullyQualifiedNamespace
    topic_name="%DT_SERVICEBUS_TOPIC%",
    subscription_name="%DT_SERVICEBUS_SUBSCRIPTION%",
)
def process_servicebus(msg: func.ServiceBusMessage) -> None:
    event_log(logging.DEBUG, "service bus message", messageId=msg.message_id, deliveryCount=msg.delivery_count)
    function_app.worker().process(msg.get_body())


@eventhub.function_name(name="process_eventhub")
@eventhub.retry(strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:10", maximum_interval="00:05:00")
@eventhub.event_hub_message_trigger(
    arg_name="events",
    connection="DT_EVENTHUB",  # identity-based: DT_EVENTHUB__fullyQualifiedNamespace
    event_hub_name="%DT_EVENTHUB_NAME%",
    cardinality=func.Cardinality.MANY,
)
def process_eventhub(events: List[func.EventHubEvent]) -> None:
    process_batch(events, function_app.worker(), poison_queue().put)


class PoisonQueue:
    """The Event Hub path's dead-letter store: a Storage queue of JSON records
    ``{"reason", "body" | "bodyBase64", "partitionKey", "sequenceNumber", "enqueuedTime"}``."""

    def __init__(self, queue) -> None:
        self.queue = queue  # a StorageEventQueue

    def put(self, event: func.EventHubEvent, reason: str) -> None:
        body = event.get_body()
        record = {
            "reason": reason,
            "sequenceNumber": event.sequence_number,
            "partitionKey": event.partition_key,
            "enqueuedTime": event.enqueued_time.isoformat() if event.enqueued_time else None,
        }
        try:
            record["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            record["bodyBase64"] = base64.b64encode(body).decode("ascii")
        self.queue.enqueue(json.dumps(record, separators=(",", ":")), event_id="")


def poison_queue() -> PoisonQueue:
    """The poison queue named by the app settings; one client per container."""
    from .clients import AzureConfig

    config = AzureConfig.from_env()
    return _poison_queue(config.connection, os.environ.get(POISON_SETTING, "").strip() or DEFAULT_POISON_QUEUE)


@functools.lru_cache(maxsize=4)
def _poison_queue(connection: str, name: str) -> PoisonQueue:
    from .clients import queue_client
    from .storage_queue import StorageEventQueue

    return PoisonQueue(StorageEventQueue(queue_client(connection, name)))


def process_batch(
    events: List[func.EventHubEvent],
    worker,
    poison: Callable[[func.EventHubEvent, str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Every event of one batch, each handled, dead-lettered to `poison`, or (held by
    another worker right now) left for a replay of the batch: raises `EventInFlight` at
    the end then, so the function's retry policy runs the batch again after a delay.
    Raises `StoreError` when `poison` cannot store an event (the replay retries it)."""
    from core.worker import EventInFlight, PoisonMessage

    held_elsewhere: Optional[EventInFlight] = None
    for event in events:
        attempts = max(1, worker.settings.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                worker.process(event.get_body())
                break
            except PoisonMessage as exc:
                poison(event, f"not a DT event: {exc}")
                break
            except EventInFlight as exc:
                held_elsewhere = exc
                break
            except Exception as exc:  # HandlerFailed, StoreError, a bug: retry here, then poison
                if attempt == attempts:
                    event_log(
                        logging.ERROR,
                        "dead-lettering after the last attempt",
                        sequenceNumber=event.sequence_number,
                        attempt=attempt,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    poison(event, f"failed {attempt} times: {type(exc).__name__}: {exc}")
                else:
                    sleep(RETRY_STEP_S * attempt)
    if held_elsewhere is not None:
        raise held_elsewhere


def build(kind: str) -> func.FunctionApp:
    """The function app for one direct-delivery kind."""
    if kind not in KINDS:
        raise ValueError(f"{KIND_SETTING} must be one of: {', '.join(KINDS)}")
    app = func.FunctionApp()
    app.register_functions(servicebus if kind == "servicebus" else eventhub)
    return app


app = build(os.environ.get(KIND_SETTING, "").strip().lower() or "servicebus")
