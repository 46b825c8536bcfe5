"""Google Cloud Functions (2nd gen) entry points.

    ingest(request)       HTTP, unauthenticated (DT signs each request): verify, dedup in
                          Firestore, publish to Pub/Sub, answer 202/200/4xx/503.
    process(cloud_event)  Pub/Sub trigger (Eventarc, deployed with --retry): run the user's
                          handlers once per event; raise so Pub/Sub redelivers, and the
                          subscription's dead-letter policy stops after a bounded number.

Configuration (environment): DT_SIGNATURE_SECRET (Secret Manager via --set-secrets),
DT_PUBSUB_TOPIC (projects/P/topics/T, ingest only), DT_DEDUP_COLLECTION (default dt_events),
DT_STATE_COLLECTION (default dt_device_state), DT_HANDLERS, and core's other DT_* settings.
The Google project comes from the standard environment (metadata server, or
GOOGLE_CLOUD_PROJECT).

Clients, Receiver and Worker are built once per container on first use; the Google SDKs
are imported only then (cold start). `reset()` forgets them (tests).
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import re
import threading

import functions_framework

from core import logs
from core.config import ConfigError, Settings
from core.http import Headers, Request, Response
from core.logs import event_log

from .firestore_store import FirestoreClaimStore, FirestoreStateStore
from .pubsub_queue import PubSubQueue

DEFAULT_DEDUP_COLLECTION = "dt_events"
DEFAULT_STATE_COLLECTION = "dt_device_state"
_TOPIC = re.compile(r"projects/[^/]+/topics/[^/]+")

_builders = []


def _per_container(build):
    """Build once per container (thread-safe), with `cache_clear()` for tests."""
    lock = threading.Lock()
    box: list = []

    @functools.wraps(build)
    def get():
        if not box:
            with lock:
                if not box:
                    box.append(build())
        return box[0]

    get.cache_clear = box.clear  # type: ignore[attr-defined]
    _builders.append(get)
    return get


def reset() -> None:
    """Forget every client and object built for this container (tests, config changes)."""
    for get in _builders:
        get.cache_clear()


@_per_container
def settings() -> Settings:
    logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
    return Settings.from_env()


@_per_container
def firestore_client():
    from google.cloud import firestore

    return firestore.Client()


def new_publisher():
    from google.cloud import pubsub_v1

    # One event per request: send it at once instead of waiting to fill a batch.
    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))


publisher = _per_container(new_publisher)


@_per_container
def claim_store() -> FirestoreClaimStore:
    return FirestoreClaimStore(firestore_client(), os.environ.get("DT_DEDUP_COLLECTION") or DEFAULT_DEDUP_COLLECTION)


@_per_container
def state_store() -> FirestoreStateStore:
    return FirestoreStateStore(firestore_client(), os.environ.get("DT_STATE_COLLECTION") or DEFAULT_STATE_COLLECTION)


@_per_container
def event_queue() -> PubSubQueue:
    topic = os.environ.get("DT_PUBSUB_TOPIC", "").strip()
    if not _TOPIC.fullmatch(topic):
        raise ConfigError("DT_PUBSUB_TOPIC must be set to projects/<project>/topics/<topic>")
    return PubSubQueue(publisher(), topic, rebuild=new_publisher)


@_per_container
def receiver():
    from core.receiver import Receiver

    from .metrics import RECORDER

    return Receiver(settings(), claim_store(), event_queue(), metrics=RECORDER)


@_per_container
def worker():
    from core.worker import Worker

    from .metrics import RECORDER

    return Worker(settings(), claim_store(), state_store(), metrics=RECORDER)


def _flask_response(response: Response):
    return response.body, response.status, response.all_headers()


@functions_framework.http
def ingest(request):
    """One DT request (a flask.Request) in, one JSON response out."""
    try:
        handle = receiver().handle
    except Exception as exc:  # misconfiguration or no credentials: ours, so DT should retry
        reason = str(exc) if isinstance(exc, ConfigError) else "receiver could not start"
        logs.configure()
        logs.log.error("ingest could not start: %s", type(exc).__name__, exc_info=True)
        return _flask_response(
            Response(503, {"error": "unavailable", "reason": reason}, {"Retry-After": "5"})
        )
    # get_data() before anything touches request.form: the exact bytes DT signed.
    body = request.get_data(cache=True, as_text=False, parse_form_data=False)
    core_request = Request(request.method, body, Headers(list(request.headers.items())), request.path)
    return _flask_response(handle(core_request))


class BadDelivery(ValueError):
    """The CloudEvent does not carry a Pub/Sub message; it can never succeed."""


def message_text(cloud_event) -> str:
    """The queued message from an Eventarc Pub/Sub CloudEvent:
    data = {"message": {"data": <base64>, "attributes": {...}, "messageId": ...}, "subscription": ...}."""
    data = cloud_event.data
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("data"), str):
        raise BadDelivery("CloudEvent data has no Pub/Sub message data")
    try:
        return base64.b64decode(message["data"], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadDelivery(f"Pub/Sub message data is not base64 UTF-8 ({type(exc).__name__})") from None


def delivery_attempt(cloud_event) -> int | None:
    """Which delivery this is, from the push body's ``deliveryAttempt`` (Pub/Sub sets it
    when the subscription has a dead-letter policy), or None when it is not given."""
    data = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    value = data.get("deliveryAttempt")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@functions_framework.cloud_event
def process(cloud_event):
    """Returns (HTTP 200: Pub/Sub acks) when the event is handled or was handled before;
    raises (HTTP 500: Pub/Sub redelivers, then dead-letters) otherwise."""
    try:
        text = message_text(cloud_event)
    except BadDelivery as exc:  # in direct mode, whatever DT (or anyone) published
        event_log(logging.ERROR, "poison message: not a DT event, it will be dead-lettered", reason=str(exc))
        raise
    try:
        app = worker()
    except Exception as exc:
        logs.start_failed("the worker", exc, "Pub/Sub will redeliver")
        raise
    try:
        app.process(text)
    except Exception:
        attempt = delivery_attempt(cloud_event)
        app.delivery_failed(dead_lettered=attempt is not None and attempt >= app.settings.max_attempts)
        message = (cloud_event.data or {}).get("message") or {}
        event_log(
            logging.WARNING,
            "processing failed; Pub/Sub will redeliver",
            eventId=(message.get("attributes") or {}).get("eventId"),
            messageId=message.get("messageId"),
        )
        raise
