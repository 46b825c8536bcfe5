"""IBM Cloud: the Code Engine function entry point and the changes-feed worker on npm
pouchdb-server, which speaks CouchDB's (and so Cloudant's) HTTP API.

Differences from Cloudant the tests step around (the code follows Cloudant's behaviour):
- `last_seq` is an int, not an opaque string: the worker stores whatever it gets as text
  and never compares it, so both work.
- longpoll ignores `timeout`: only `--once` (a normal feed) is driven here; the
  continuous mode's test bounds each poll with the HTTP read timeout.
- `_changes?filter=_selector` crashes pouchdb-server 4.2, so the worker filters the feed
  itself (it would anyway: ledger documents share the database).
- Mango `_find` ignores `bookmark`, so a query (`outbox.depth()`, correct on Cloudant)
  stops at its first page of 200 documents: `queue_depth` counts from `_all_docs`.
- A document id of ``null`` is refused (400): `core.keys.store_key` hashes that id.
It runs with ``--in-memory`` (nothing to clean on disk) and an admin user, so the SDK's
BasicAuthenticator is exercised as it is with CLOUDANT_USERNAME/PASSWORD.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import parse_qs
from pathlib import Path
from typing import Mapping
from unittest import mock

import pytest

from .base import Harness, Reply, StandIn, free_port

ROOT = Path(__file__).resolve().parents[2]
POUCHDB = ROOT / "node_modules" / ".bin" / "pouchdb-server"
ADMIN = ("dtadmin", "stand-in-password")
#: Variables the entry points read; a harness sets exactly its own.
OWNED_PREFIXES = ("DT_", "CLOUDANT_")


def canonical(name: str) -> str:
    """How Code Engine presents header names: ``x-dt-signature`` -> ``X-Dt-Signature``."""
    return "-".join(part.capitalize() for part in name.split("-"))


def header_map(headers) -> dict[str, str]:
    """Headers as the platform's map; a repeated header is joined with ", " as proxies do."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        key = canonical(name)
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def code_engine_args(body: bytes, headers, method: str = "POST", path: str = "/") -> dict:
    """The `args` Code Engine gives `main`: JSON bodies Base64 in ``__ce_body``, and their
    top-level keys and the query parameters spread into `args` as well."""
    path, _, query = path.partition("?")
    args = {
        "__ce_method": method,
        "__ce_headers": header_map(headers),
        "__ce_path": path,
        "__ce_query": query,
        "__ce_body": base64.b64encode(body).decode("ascii"),
    }
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    spread = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if isinstance(doc, dict):
        spread.update(doc)
    args.update({k: v for k, v in spread.items() if not k.startswith("__ce_")})
    return args


class IBMHarness(Harness):
    def __init__(self, stand_in: "IBMStandIn", env: Mapping[str, str]):
        from ibm_action import __main__ as entry
        from ibm_action import worker

        self._entry, self._worker = entry, worker
        suffix = uuid.uuid4().hex[:10]
        self.env = {
            # Redelivery at once in tests (a test may ask for a real backoff).
            "DT_MAX_ATTEMPTS": str(self.max_attempts),
            "DT_RETRY_DELAY_S": "0",
            **env,
            "CLOUDANT_URL": stand_in.url,
            "CLOUDANT_USERNAME": ADMIN[0],
            "CLOUDANT_PASSWORD": ADMIN[1],
            "DT_CLOUDANT_DB": f"dt_events_{suffix}",
            "DT_CLOUDANT_STATE_DB": f"dt_state_{suffix}",
        }
        self._saved = dict(os.environ)
        for key in list(os.environ):
            if key.startswith(OWNED_PREFIXES):
                del os.environ[key]
        os.environ.update(self.env)
        entry.reset()
        worker.reset()
        from ibm_action.metrics import RECORDER

        self.stdout = io.StringIO()  # what IBM Cloud Logs would parse
        RECORDER.stream = self.stdout
        self.runner().prepare()  # what the worker does at start: databases and index
        self.ingest = entry.ingest()
        self.claim_store = self.ingest.claims
        self.state_store = self._worker.app().state

    def runner(self):
        return self._worker.FeedRunner(self._worker.app())

    def new_container(self) -> None:
        self._entry.reset()

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        result = self._entry.main(code_engine_args(body, headers, method, path))
        payload = result["body"]
        text = payload if isinstance(payload, str) else json.dumps(payload)
        return Reply(result["statusCode"], text, dict(result["headers"]))

    def drain(self) -> None:
        self.runner().drain()  # one `--once` job run

    def inject_message(self, message: str) -> None:
        from core.keys import store_key

        event_id = json.loads(message)["event"]["eventId"]

        def pending_again(doc):
            doc = doc or {}
            doc["outbox"] = {"state": "pending", "eventId": event_id, "body": message, "attempts": 0}
            return doc

        self.ingest.outbox.docs.update(store_key(event_id), pending_again)

    def queue_depth(self) -> int:
        # Not outbox.depth(): its bookmark-paged query stops at 200 here (see the top).
        from ibm_action.outbox import is_pending

        docs = self.ingest.outbox.docs
        rows = docs.service.post_all_docs(db=docs.db, include_docs=True).get_result()["rows"]
        return sum(1 for row in rows if is_pending(row.get("doc")))

    def dead_letters(self) -> list[str]:
        return [d["eventId"] for d in self.ingest.outbox.dead_letters()]

    def requeue_dead_letters(self) -> int:
        """`python -m ibm_action.worker --dead-letters --requeue`."""
        outbox = self.ingest.outbox
        return sum(1 for letter in outbox.dead_letters() if outbox.requeue(letter["id"]))

    def sweep(self) -> None:
        self.runner().sweep()  # what the worker job runs on its interval and after --once

    def stored_records(self) -> dict[str, int]:
        from ibm_action.retention import store_report

        app = self._worker.app()
        counts = store_report(app.events, app.state_docs).counts
        return {"events": counts["events"] + counts["ledger"], "state": counts["device_state"]}

    @contextlib.contextmanager
    def broken(self, part: str):
        # The real SDK pointed at a closed loopback port: requests raises ConnectionError
        # through the SDK, exactly as for an unreachable Cloudant.
        from ibm_action.cloudant import CloudantConfig, build_service

        # Claims and the outbox are one database (one document per event): either part
        # failing is that database failing.
        events = [self.ingest.claims.docs, self.ingest.outbox.docs]
        targets = {"claims": events, "queue": events, "state": [self._worker.app().state.docs]}[part]
        dead = build_service(
            CloudantConfig.from_env({**self.env, "CLOUDANT_URL": f"http://127.0.0.1:{free_port()}"})
        )
        real = [docs.service for docs in targets]
        for docs in targets:
            docs.service = dead
        try:
            yield
        finally:
            for docs, service in zip(targets, real):
                docs.service = service

    def metrics(self):
        from tests.metrics_native import parse_json_log

        return parse_json_log(self.stdout.getvalue().splitlines())

    def close(self) -> None:
        from ibm_action.metrics import RECORDER

        if RECORDER.stream is self.stdout:
            RECORDER.stream = None
        app = self._worker.app()
        for docs in (app.events, app.state_docs):
            with contextlib.suppress(Exception):
                docs.service.delete_database(db=docs.db)
        self._entry.reset()
        self._worker.reset()
        os.environ.clear()
        os.environ.update(self._saved)


@functools.lru_cache(maxsize=None)
def _ssl_context(verify: bool):
    """The SSL context the Cloudant SDK builds for every service it creates (each loads
    the whole CA bundle: 30 ms), built once per setting, exactly as the SDK builds it."""
    import ssl

    from requests import certs
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context()
    context.load_verify_locations(certs.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _init_poolmanager(adapter, connections, maxsize, block, **pool_kwargs):
    """`SSLHTTPAdapter.init_poolmanager` with a shared context: an IBM container creates
    its services once, the tests create them per harness (a sixth of the IBM suite's
    time went to reading the CA bundle for connections to a plain-HTTP stand-in)."""
    from requests.adapters import HTTPAdapter

    context = _ssl_context(not adapter._disable_ssl_verification)
    HTTPAdapter.init_poolmanager(adapter, connections, maxsize, block, ssl_context=context, **pool_kwargs)


class IBMStandIn(StandIn):
    name = "ibm"

    def start(self) -> None:
        if shutil.which("node") is None:
            pytest.skip("node is not installed: pouchdb-server (the Cloudant stand-in) cannot run")
        if not POUCHDB.exists():
            pytest.skip("node_modules/.bin/pouchdb-server is missing: run `npm install` at the repo root")
        try:
            import ibmcloudant  # noqa: F401
        except ImportError:
            pytest.skip("the ibmcloudant SDK is not installed (pip install -e '.[ibm]')")
        self._dir = tempfile.TemporaryDirectory(prefix="dtconnector-pouchdb-")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(Path(self._dir.name) / "pouchdb.log", "wb")
        self._proc = subprocess.Popen(
            [str(POUCHDB), "--in-memory", "--port", str(port), "--host", "127.0.0.1",
             "--no-stdout-logs", "--config", str(Path(self._dir.name) / "config.json")],
            cwd=self._dir.name,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it spawned
        )
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pouchdb-server exited with {self._proc.returncode}; see its log")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("pouchdb-server did not answer within 30 s")
                time.sleep(0.1)
        # Leave "admin party": from now on every request needs the admin's basic auth.
        request = urllib.request.Request(
            f"{self.url}/_config/admins/{ADMIN[0]}", data=json.dumps(ADMIN[1]).encode(), method="PUT"
        )
        urllib.request.urlopen(request, timeout=5).close()
        from ibm_cloud_sdk_core.http_adapter import SSLHTTPAdapter

        self._one_ssl_context = mock.patch.object(SSLHTTPAdapter, "init_poolmanager", _init_poolmanager)
        self._one_ssl_context.start()

    def stop(self) -> None:
        if getattr(self, "_one_ssl_context", None):
            self._one_ssl_context.stop()
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
        if getattr(self, "_dir", None):
            self._dir.cleanup()

    def harness(self, env: Mapping[str, str]) -> Harness:
        return IBMHarness(self, env)


STAND_IN = IBMStandIn()
