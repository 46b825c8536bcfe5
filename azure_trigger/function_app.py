"""Azure Functions entry points (Python v2 programming model).

- `ingest`: HTTP trigger, anonymous (DT signs each request; the signature is the auth),
  any path under the route prefix. Verifies, dedups on Table Storage and enqueues on a
  Storage queue before answering, through core's Receiver.
- `process`: Storage queue trigger on the queue named by the `DT_QUEUE_NAME` app setting.
  Runs core's Worker; raising makes the host retry the message, and after
  `extensions.queues.maxDequeueCount` (host.json) it moves it to `<queue>-poison`.
- `sweep`: timer trigger (`SWEEP_SCHEDULE`). Table Storage has no TTL, so this removes
  the dedup and ledger rows that nobody needs any more (azure_trigger.retention), in
  bounded batches: storage stays bounded by the dedup window.

Clients, the Receiver and the Worker are built once per container, on first use, and
the Azure storage SDKs are imported only then. `reset()` drops them (tests).
"""

# No `from __future__ import annotations`: the Python worker matches bindings against the
# real annotation classes (func.HttpRequest, func.QueueMessage), not strings.
import json
import logging
import os
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import azure.functions as func

from core.config import ConfigError, Settings
from core.logs import configure as configure_logs, event_log, log, start_failed

# A queue message holds at most 64 KiB of base64, i.e. 48 KiB of body.
AZURE_MAX_BODY_BYTES = 48 * 1024
QUEUE_SETTING = "DT_QUEUE_NAME"
# Every minute (NCRONTAB with seconds). A run removes what has expired, in paced batches,
# for as long as more is due, within SWEEP_BUDGET_S (under the functionTimeout); what is
# left is the next run's. No fixed capacity: it keeps pace with any sustained ingest rate.
SWEEP_SCHEDULE = "0 * * * * *"
SWEEP_BUDGET_S = 50.0
# Methods that reach `ingest`. Only POST is processed: the others are let through so core
# answers 405 with `Allow: POST`, where the host's router would answer a bare 404.
HTTP_METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@dataclass
class _Context:
    settings: Settings
    claims: object
    state: object
    queue: object


_lock = threading.RLock()
_context: _Context | None = None
_receiver = None
_worker = None


def settings_from_env() -> Settings:
    """Core's settings, with the body limit lowered to what a queue message can carry
    unless `DT_MAX_BODY_BYTES` says otherwise."""
    explicit = os.environ.get("DT_MAX_BODY_BYTES", "").strip()
    settings = Settings.from_env() if explicit else Settings.from_env(max_body_bytes=AZURE_MAX_BODY_BYTES)
    if settings.max_body_bytes > AZURE_MAX_BODY_BYTES:
        event_log(
            logging.WARNING,
            "DT_MAX_BODY_BYTES is above 48 KiB: larger bodies exceed the 64 KiB queue message "
            "limit and are answered 503 until DT gives up",
            limit=settings.max_body_bytes,
        )
    return settings


def context() -> _Context:
    """Settings, SDK clients and port adapters: built once per container."""
    global _context
    with _lock:
        if _context is None:
            from .clients import AzureConfig, queue_client, table_client
            from .storage_queue import StorageEventQueue
            from .table_store import TableClaimStore, TableDeviceStateStore

            configure_logs()
            config = AzureConfig.from_env()
            settings = settings_from_env()
            _context = _Context(
                settings=settings,
                claims=TableClaimStore(table_client(config.connection, config.dedup_table), settings.dedup_ttl_s),
                state=TableDeviceStateStore(table_client(config.connection, config.state_table)),
                queue=StorageEventQueue(queue_client(config.connection, config.queue_name)),
            )
        return _context


def receiver():
    global _receiver
    with _lock:
        if _receiver is None:
            from core.receiver import Receiver

            from .metrics import RECORDER

            ctx = context()
            _receiver = Receiver(ctx.settings, ctx.claims, ctx.queue, metrics=RECORDER)
        return _receiver


def worker():
    global _worker
    with _lock:
        if _worker is None:
            from core.worker import Worker

            from .metrics import RECORDER

            try:
                ctx = context()
                _worker = Worker(ctx.settings, ledger=ctx.claims, state=ctx.state, metrics=RECORDER)
            except Exception as exc:  # the host then retries the message, and poisons it
                start_failed("the worker", exc, "the message will be retried")
                raise
        return _worker


def reset() -> None:
    """Forget the container's clients, Receiver and Worker (tests; settings changes)."""
    global _context, _receiver, _worker
    with _lock:
        _context = _receiver = _worker = None


def _json(status: int, payload: dict, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        headers=headers or {},
        mimetype="application/json",
    )


def _not_configured(reason: str) -> func.HttpResponse:
    log.error("receiver is not configured: %s", reason)
    # 503 so DT keeps retrying while the app settings are fixed.
    return _json(503, {"error": "unavailable", "reason": f"receiver is not configured ({reason})"}, {"Retry-After": "30"})


@app.function_name(name="ingest")
@app.route(route="{*path}", methods=list(HTTP_METHODS), auth_level=func.AuthLevel.ANONYMOUS)
def ingest(req: func.HttpRequest) -> func.HttpResponse:
    from core.http import Headers, Request

    try:
        handler = receiver()
    except ConfigError as exc:  # names the setting, never its value
        return _not_configured(str(exc))
    except ValueError:  # the SDK refused the connection string (its text is not echoed)
        return _not_configured("the storage connection string is malformed")
    response = handler.handle(
        Request(req.method, req.get_body(), Headers(dict(req.headers)), urlsplit(req.url).path or "/")
    )
    headers = {k: v for k, v in response.all_headers().items() if k.lower() != "content-type"}
    return func.HttpResponse(response.body, status_code=response.status, headers=headers, mimetype="application/json")


@app.function_name(name="process")
@app.queue_trigger(arg_name="msg", queue_name=f"%{QUEUE_SETTING}%", connection="AzureWebJobsStorage")
def process(msg: func.QueueMessage) -> None:
    # Returning acknowledges (the host deletes the message); raising makes the host retry
    # it after host.json's visibilityTimeout, then move it to `<queue>-poison`.
    event_log(logging.DEBUG, "queue message", messageId=msg.id, dequeueCount=msg.dequeue_count)
    app = worker()
    try:
        app.process(msg.get_body())
    except Exception:
        # The host poisons the message after host.json's maxDequeueCount, which
        # DT_MAX_ATTEMPTS must equal (both 5 by default).
        app.delivery_failed(dead_lettered=(msg.dequeue_count or 0) >= app.settings.max_attempts)
        raise


@app.function_name(name="sweep")
@app.timer_trigger(arg_name="timer", schedule=SWEEP_SCHEDULE, run_on_startup=False, use_monitor=True)
def sweep(timer: func.TimerRequest) -> None:
    import time

    from core.retention import sweep_until_done

    from .retention import TableSweeper

    result = sweep_until_done(
        TableSweeper(context().claims), time.time(), budget_s=SWEEP_BUDGET_S, pause_s=0.05, wait=time.sleep
    )
    event_log(logging.INFO, "removed expired records", more=result.more, **result.removed)
