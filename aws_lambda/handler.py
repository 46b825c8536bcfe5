"""AWS Lambda entry points.

``aws_lambda.handler.ingest``   behind a Function URL or API Gateway (HTTP API payload 2.0,
                                REST API payload 1.0): one DT request in, the proxy
                                response dict out.
``aws_lambda.handler.process``  subscribed to the SQS queue with ``ReportBatchItemFailures``:
                                returns ``{"batchItemFailures": [...]}`` naming only the
                                records to redeliver; SQS's redrive policy dead-letters a
                                record after ``maxReceiveCount`` receives.

Everything else is core's. SDK clients, the Receiver and the Worker are built on the first
invocation of a container and reused; `reset()` forgets them (tests, or a changed env).

Configuration (environment):
  DT_SIGNATURE_SECRET or DT_SIGNATURE_SECRET_ARN (Secrets Manager, read once per container),
  DT_DEDUP_TABLE, DT_STATE_TABLE, DT_QUEUE_URL, DT_HANDLERS, and core's other DT_* settings.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from typing import Any, Callable

from core import logs
from core.http import Headers, Request, Response
from core.logs import event_log, log

# Ingest must answer DT within 10 s whatever AWS does: short timeouts and one retry, so a
# stuck call becomes a 503 (which DT retries) instead of a silent timeout.
INGEST_CLIENT_CONFIG = {
    "connect_timeout": 1,
    "read_timeout": 2,
    "retries": {"mode": "standard", "total_max_attempts": 2},
}
WORKER_CLIENT_CONFIG = {
    "connect_timeout": 3,
    "read_timeout": 10,
    "retries": {"mode": "standard", "total_max_attempts": 4},
}

_lock = threading.Lock()
_ingest: Any = None  # core.receiver.Receiver, once built
_worker: Any = None  # core.worker.Worker, once built


class BadRequest(ValueError):
    """The Lambda event carries no usable HTTP request (answered 400)."""


# --- containers ---------------------------------------------------------------------


def _required(name: str) -> str:
    from core.config import ConfigError

    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


class _Clients:
    """Builds SDK clients from one boto3 session (one load of botocore's endpoint data).
    Only used while holding `_lock`: boto3 sessions are not thread-safe."""

    def __init__(self, config: dict):
        import boto3
        from botocore.config import Config

        self._session = boto3.session.Session()
        self._config = Config(**config)

    def __call__(self, service: str) -> Any:
        return self._session.client(service, config=self._config)

    def factory(self, service: str) -> Callable[[], Any]:
        return lambda: self(service)


def _build_receiver():
    from core.config import Settings
    from core.receiver import Receiver

    from .dynamodb import DynamoClaimStore
    from .metrics import RECORDER
    from .secretsmanager import signature_secrets
    from .sqs import SqsEventQueue

    logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO").strip().upper() or "INFO")
    table, queue_url = _required("DT_DEDUP_TABLE"), _required("DT_QUEUE_URL")
    clients = _Clients(INGEST_CLIENT_CONFIG)
    secrets = signature_secrets(clients.factory("secretsmanager"), os.environ)
    settings = Settings.from_env(**({"secrets": secrets} if secrets is not None else {}))
    claims = DynamoClaimStore(clients("dynamodb"), table)
    return Receiver(settings, claims, SqsEventQueue(clients("sqs"), queue_url), metrics=RECORDER)


def _build_worker():
    from core.config import Settings
    from core.worker import Worker

    from .dynamodb import DynamoClaimStore, DynamoStateStore
    from .metrics import RECORDER

    logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO").strip().upper() or "INFO")
    dedup, state = _required("DT_DEDUP_TABLE"), _required("DT_STATE_TABLE")
    settings = Settings.from_env()
    dynamodb = _Clients(WORKER_CLIENT_CONFIG)("dynamodb")
    return Worker(
        settings, ledger=DynamoClaimStore(dynamodb, dedup), state=DynamoStateStore(dynamodb, state), metrics=RECORDER
    )


def receiver():
    """The container's Receiver, built on first use. Raises if it cannot be built (not
    cached then: the next request tries again)."""
    global _ingest
    if _ingest is None:
        with _lock:
            if _ingest is None:
                _ingest = _build_receiver()
    return _ingest


def worker():
    """The container's Worker, built on first use (see `receiver`)."""
    global _worker
    if _worker is None:
        with _lock:
            if _worker is None:
                _worker = _build_worker()
    return _worker


def reset() -> None:
    """Forget the container's clients, Receiver, Worker and cached secret."""
    global _ingest, _worker
    from .secretsmanager import clear_cache

    with _lock:
        _ingest = _worker = None
    clear_cache()


# --- ingest -------------------------------------------------------------------------


def to_request(event: object) -> Request:
    """Core's Request from an API Gateway (payload 1.0 or 2.0) or Function URL event."""
    if not isinstance(event, dict):
        raise BadRequest("the Lambda event is not an HTTP request")
    if "httpMethod" in event:  # REST API (payload 1.0): all values in multiValueHeaders
        method = event.get("httpMethod") or ""
        path = event.get("path") or "/"
        headers = event.get("multiValueHeaders") or event.get("headers") or {}
    else:  # HTTP API payload 2.0 and Function URLs: repeated headers arrive comma-joined
        http = (event.get("requestContext") or {}).get("http") or {}
        method = http.get("method") or ""
        path = event.get("rawPath") or http.get("path") or "/"
        headers = event.get("headers") or {}
    if not isinstance(headers, dict):
        headers = {}
    body = event.get("body")
    if body is None:
        raw = b""
    elif not isinstance(body, str):
        raise BadRequest("the request body is not text")
    elif event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("the request body is not valid base64") from None
    else:
        # Lone surrogates (from \ud800 escapes in the event JSON) become invalid UTF-8,
        # which core then refuses with 400, instead of an encoding error here.
        raw = body.encode("utf-8", "surrogatepass")
    return Request(method, raw, Headers(headers), path)


def to_proxy(response: Response) -> dict:
    """The proxy integration response; valid for payload 1.0, 2.0 and Function URLs."""
    return {
        "statusCode": response.status,
        "headers": response.all_headers(),
        "body": response.body,
        "isBase64Encoded": False,
    }


def _unavailable(reason: str) -> Response:
    from core.receiver import RETRY_AFTER_S

    return Response(503, {"error": "unavailable", "reason": reason}, {"Retry-After": RETRY_AFTER_S})


def ingest(event: dict, context: object = None) -> dict:
    try:
        request = to_request(event)
    except BadRequest as exc:
        return to_proxy(Response(400, {"error": "bad_request", "reason": str(exc)}))
    try:
        app = receiver()
    except Exception as exc:
        from core.config import ConfigError
        from core.ports import StoreError

        log.exception("the receiver could not start")
        if isinstance(exc, ConfigError):
            return to_proxy(_unavailable(f"receiver is not configured ({exc})"))
        if isinstance(exc, StoreError):
            return to_proxy(_unavailable("signature secret unavailable"))
        return to_proxy(_unavailable("receiver could not start"))
    return to_proxy(app.handle(request))


# --- worker -------------------------------------------------------------------------


def _receive_count(record: dict) -> int:
    try:
        return int((record.get("attributes") or {}).get("ApproximateReceiveCount", "0"))
    except (TypeError, ValueError):
        return 0


def process(event: dict, context: object = None) -> dict:
    records = [r for r in ((event or {}).get("Records") or []) if isinstance(r, dict)]
    try:
        app = worker()
    except Exception as exc:
        logs.start_failed("the worker", exc, "the whole batch will be redelivered")
        return {"batchItemFailures": [{"itemIdentifier": r.get("messageId", "")} for r in records]}
    failures = []
    for record in records:
        message_id = record.get("messageId", "")
        try:
            app.process(record.get("body") or "")
        except Exception as exc:  # RetryLater, StoreError, or a bug: redeliver either way
            attempts = _receive_count(record)
            last = attempts >= app.settings.max_attempts
            app.delivery_failed(dead_lettered=last)
            event_log(
                logging.ERROR if last else logging.WARNING,
                "dead-lettering after the last attempt" if last else "message will be redelivered",
                messageId=message_id,
                attempt=attempts,
                error=f"{type(exc).__name__}: {exc}",
            )
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
