"""Azure Functions on Azurite: Table Storage and Storage Queues, the functions invoked the
way the Functions host invokes them.

Azurite (npm, pinned in the root package.json) runs once per session on ports the OS
picks. Each harness gets its own queue and tables, applies its env to `os.environ` (the
Functions host exposes app settings as environment variables) and resets the entry
module's per-container caches. `deliver` builds a real `func.HttpRequest` and calls the
user function registered on `app` as `ingest`; `drain` plays the queue trigger: it
receives a message, decodes its base64 as the host does, builds a real
`func.QueueMessage` and calls `process`; success deletes the message, a failure makes it
visible again (at once, in tests) and, once its dequeue count reaches `max_attempts`
(host.json's maxDequeueCount), moves it to `<queue>-poison`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs

import pytest

from .base import Harness, Reply, StandIn, free_port

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: Settings the entry points read besides the contract's DT_* env; replaced per harness.
_MANAGED = ("AzureWebJobsStorage", "DT_STORAGE_CONNECTION")


def connection_string(queue_url: str, table_url: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"QueueEndpoint={queue_url}/{ACCOUNT};TableEndpoint={table_url}/{ACCOUNT};"
    )


@functools.lru_cache(maxsize=None)
def functions_by_name() -> dict:
    """The functions the host indexes from `app`, by name. The host indexes once per
    process, and `app.get_functions()` refuses to be called twice."""
    from azure_trigger.function_app import app

    return {f.get_function_name(): f for f in app.get_functions()}


def call(function, argument):
    """Invoke a registered function the way the worker does: its trigger binding's name
    is the keyword argument."""
    [trigger] = [b for b in function.get_bindings() if b.type.endswith("Trigger")]
    return function.get_user_function()(**{trigger.name: argument})


def resolve_setting(value: str) -> str:
    """`%NAME%` in a binding is replaced by the app setting NAME."""
    return re.sub(r"%([^%]+)%", lambda m: os.environ[m.group(1)], value)


def http_request(method: str, body: bytes, headers, path: str):
    """A `func.HttpRequest` as the worker's converter builds it (`azure.functions.http`'s
    subclass): header names lower-cased, a header sent twice joined into one
    comma-separated value (as ASP.NET Core does), the raw body as bytes."""
    from azure.functions.http import HttpRequest

    merged: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else str(value)
    route, _, query = path.partition("?")
    return HttpRequest(
        method=method.upper(),
        url=f"https://dtconnector.azurewebsites.net/api{path}",
        headers=merged,
        params={k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()},
        route_params={"path": route.lstrip("/")},
        body_type="bytes",
        body=body,
    )


def reply_of(response) -> Reply:
    """What the client receives: the worker adds Content-Type from the mimetype."""
    headers = dict(response.headers)
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
    return Reply(response.status_code, response.get_body().decode("utf-8"), headers)


METRICS_LOGGER = "dtconnector_metrics"


class _RecordList(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class AzureHarness(Harness):
    def __init__(self, stand_in: "AzureStandIn", env: Mapping[str, str]):
        from azure.storage.queue import QueueClient

        import azure_trigger.function_app as function_app

        self.stand_in = stand_in
        self.module = function_app
        suffix = uuid.uuid4().hex[:16]
        self.queue_name = f"dt-events-{suffix}"
        self.settings = {
            "DT_MAX_ATTEMPTS": str(self.max_attempts),  # = host.json's maxDequeueCount, as deployed
            **env,
            "AzureWebJobsStorage": stand_in.connection,
            "DT_QUEUE_NAME": self.queue_name,
            "DT_DEDUP_TABLE": f"dtevents{suffix}",
            "DT_STATE_TABLE": f"dtstate{suffix}",
        }
        self._saved = dict(os.environ)
        for key in list(os.environ):
            if key.startswith("DT_") or key in _MANAGED:
                del os.environ[key]
        os.environ.update(self.settings)
        function_app.reset()
        self._metric_records = _RecordList()  # what the host's log handler would receive
        logging.getLogger(METRICS_LOGGER).addHandler(self._metric_records)
        self.functions = functions_by_name()
        # The queue and account the trigger binding names, resolved from the app settings
        # as the host does, read raw (the host sees the base64 text), and its poison queue.
        [trigger] = self.functions["process"].get_bindings()
        watched = resolve_setting(trigger.queue_name)
        connection = os.environ[trigger.connection]
        self.raw_queue = QueueClient.from_connection_string(connection, watched)
        self.poison_queue = QueueClient.from_connection_string(connection, f"{watched}-poison")
        self.raw_queue.create_queue()  # deploy.sh creates it; ingest also would on first use
        ctx = function_app.context()
        self.claim_store = ctx.claims
        self.state_store = ctx.state

    def new_container(self) -> None:
        self.module.reset()

    # -- the HTTP front end -------------------------------------------------------------
    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        ingest = self.functions["ingest"]
        [trigger] = [b for b in ingest.get_bindings() if b.type == "httpTrigger"]
        allowed = {str(getattr(m, "value", m)).upper() for m in (trigger.methods or ())}
        if allowed and method.upper() not in allowed:
            return Reply(404, "")  # the host's router: no function for this method
        return reply_of(call(ingest, http_request(method, body, headers, path)))

    # -- the queue trigger --------------------------------------------------------------
    def drain(self) -> None:
        # What the worker's queueTrigger converter builds: func.QueueMessage's subclass
        # carrying the host's metadata (dequeue count, times, pop receipt).
        from azure.functions.queue import QueueMessage

        process = self.functions["process"]
        for _ in range(10_000):
            message = self.raw_queue.receive_message(visibility_timeout=300)
            if message is None:
                return
            if message.dequeue_count > self.max_attempts:  # the host poisons these unread
                self._poison(message)
                continue
            try:
                body = base64.b64decode(message.content, validate=True)
            except (binascii.Error, ValueError):
                raise AssertionError(f"queue message is not base64: {message.content[:60]!r}") from None
            queue_message = QueueMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            try:
                call(process, queue_message)
            except Exception:
                if message.dequeue_count >= self.max_attempts:
                    self._poison(message)
                else:  # host.json visibilityTimeout, zero in tests
                    self.raw_queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)
            else:
                self.raw_queue.delete_message(message.id, message.pop_receipt)
        raise AssertionError("drain did not empty the queue")

    def _poison(self, message) -> None:
        with contextlib.suppress(Exception):
            self.poison_queue.create_queue()
        self.poison_queue.send_message(message.content)
        self.raw_queue.delete_message(message.id, message.pop_receipt)

    def inject_message(self, message: str) -> None:
        self.module.context().queue.enqueue(message, event_id=json.loads(message)["event"]["eventId"])

    def queue_depth(self) -> int:
        return self.raw_queue.get_queue_properties().approximate_message_count

    def dead_letters(self) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            peeked = self.poison_queue.peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return []
        return [json.loads(base64.b64decode(m.content))["event"]["eventId"] for m in peeked]

    def requeue_dead_letters(self) -> int:
        """What an operator does (Storage Explorer's "move", or a script): each poison
        message sent back to the watched queue as it is, then deleted."""
        from azure.core.exceptions import ResourceNotFoundError

        moved = 0
        try:
            while True:
                batch = list(self.poison_queue.receive_messages(messages_per_page=32, visibility_timeout=60, max_messages=32))
                if not batch:
                    return moved
                for message in batch:
                    self.raw_queue.send_message(message.content)
                    self.poison_queue.delete_message(message.id, message.pop_receipt)
                    moved += 1
        except ResourceNotFoundError:
            return moved

    # -- bounded storage ----------------------------------------------------------------
    def sweep(self) -> None:
        from azure.functions.timer import TimerRequest

        call(self.functions["sweep"], TimerRequest())  # the timer trigger, as the host fires it

    def stored_records(self) -> dict[str, int]:
        from azure_trigger.retention import store_report

        ctx = self.module.context()
        counts = store_report(ctx.claims, ctx.state.table).counts
        return {"events": counts["claims"] + counts["ledger"] + len(self.dead_letters()), "state": counts["device_state"]}

    # -- failures -----------------------------------------------------------------------
    @contextlib.contextmanager
    def broken(self, part: str):
        """Point that part's SDK client at a loopback port nobody listens on: the SDK then
        raises `ServiceRequestError` (after its own retries), as for an unreachable account."""
        from azure_trigger.clients import queue_client, table_client

        dead = connection_string(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
        ctx = self.module.context()
        if part == "queue":
            target, attribute = ctx.queue, "client"
            replacement = queue_client(dead, self.queue_name)
        else:
            store = ctx.claims if part == "claims" else ctx.state
            target, attribute = store.table, "client"
            name = self.settings["DT_DEDUP_TABLE"] if part == "claims" else self.settings["DT_STATE_TABLE"]
            replacement = table_client(dead, name)
        real = getattr(target, attribute)
        setattr(target, attribute, replacement)
        try:
            yield
        finally:
            setattr(target, attribute, real)

    def metrics(self):
        from tests.metrics_native import parse_custom_dimensions

        return parse_custom_dimensions(r.custom_dimensions for r in self._metric_records.records)

    def close(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        logging.getLogger(METRICS_LOGGER).removeHandler(self._metric_records)
        self.module.reset()
        os.environ.clear()
        os.environ.update(self._saved)
        for client in (self.raw_queue, self.poison_queue):
            with contextlib.suppress(ResourceNotFoundError):
                client.delete_queue()


class AzureStandIn(StandIn):
    name = "azure"

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None
        self.connection = ""

    def start(self) -> None:
        if shutil.which("node") is None:
            pytest.skip("node is not installed: Azurite (the Azure Storage stand-in) cannot run")
        if not AZURITE.exists():
            pytest.skip("node_modules/.bin/azurite is missing: run `npm ci` at the repository root")
        try:
            import azure.data.tables  # noqa: F401
            import azure.functions  # noqa: F401
            import azure.storage.queue  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"Azure SDKs are not installed ({exc.name}): pip install -e '.[azure]'")
        self._dir = tempfile.TemporaryDirectory(prefix="dtconnector-azurite-")
        log_path = Path(self._dir.name) / "azurite.log"
        with open(log_path, "wb") as out:
            self._proc = subprocess.Popen(
                [
                    str(AZURITE),
                    "--blobPort", "0", "--queuePort", "0", "--tablePort", "0",
                    "--inMemoryPersistence", "--extentMemoryLimit", "64",
                    "--skipApiVersionCheck", "--disableTelemetry", "--silent",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir.name,
                start_new_session=True,  # its own process group: stop() kills node and children
            )
        urls = self._wait_for_ports(log_path)
        self.connection = connection_string(urls["Queue"], urls["Table"])

    def _wait_for_ports(self, log_path: Path) -> dict[str, str]:
        pattern = re.compile(r"Azurite (Queue|Table) service is successfully listening at (http://[\d.]+:\d+)")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            urls = dict(pattern.findall(text))
            if len(urls) == 2:
                return urls
            code = self._proc.poll()
            if code is not None:
                self.stop()
                pytest.fail(f"Azurite exited with code {code}:\n{text[-2000:]}")
            time.sleep(0.1)
        self.stop()
        pytest.fail("Azurite did not start listening within 60 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def harness(self, env: Mapping[str, str]) -> Harness:
        return AzureHarness(self, env)


STAND_IN = AzureStandIn()
