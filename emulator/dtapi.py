"""A local stand-in for DT Cloud's REST API, for tests and offline demos.

Why it exists: `dtconnector connector|backfill|stream` talk to DT's REST API
(`dtcloud.client`); to test them offline, unchanged, something must answer the way DT does.
This server implements only what DT documents (its developer docs,
https://docs.developer.disruptive-technologies.com: "Authentication: OAuth2", "Pagination",
"Streaming Events", the REST API reference):

- `POST /oauth2/token`: verifies the client's HS256 JWT assertion (`kid` = key id, `iss` =
  email, `aud` = this endpoint) with the service account's secret; 400 on bad credentials;
  answers `access_token`, `expires_in`.
- `/v2/projects/{p}/dataconnectors[/{id}[:sync|:metrics]]`: CRUD, a `:sync` that really
  POSTs, signed like DT (`emulator.signing`), the latest event per device and type to the
  connector's URL, and `:metrics` counted from its own deliveries over the last 3 h.
- `/v2/projects/{p}/devices` and `/devices/{d}/events` with `pageToken`/`pageSize`,
  `startTime`/`endTime` (default the last 24 h) and repeatable `eventTypes`.
- `/v2/projects/{p}/devices:stream`: NDJSON `{"result": {"event": …}}` lines, `ping` events
  every `ping_interval`, and `drop_streams()` to force a disconnect.
- Injected faults: `fail(status, times)` answers the next API requests with 429/5xx;
  `down = True` is an outage (every API request 503); `refuse_streams`, `silent` (no pings)
  and `history_delay_s` or `hold_history` (events reach the history late, as DT's do).

Connector URLs must be https, except http://127.0.0.1 / localhost when `allow_http_loopback`
(DT itself refuses http; the CLI allows such a URL only while DT_API_URL is on loopback too).

Hostile modes, for the tests of what the CLI does when DT's API misbehaves: `hostile` is a
function given each API request first (`(handler, method, path, params) -> bool`, True when it
answered); `endless_pages`, `huge_answer`, `stream_lines` and `endless_line` make the usual
ones. `fail(status, times, message=…, retry_after=…)` injects error answers; `extra_history`
puts items in a device's history as they are (a numeric timestamp, say).

A test double: it lives with the emulator, and no product module imports it. Run alone for a
demo: `python -m emulator.dtapi` prints the environment that points the CLI at it.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import jwt

from core.times import duration_arg, parse_rfc3339, rfc3339
from dtcloud.bodies import connector_body, device_id_of
from dtcloud.connectors import CONFIG_KEY, TYPES

from .httpserver import QuietThreadingHTTPServer
from .signing import sign

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
STATUSES = ("ACTIVE", "USER_DISABLED", "SYSTEM_DISABLED")
METRICS_WINDOW_S = 3 * 3600


parse_time = parse_rfc3339
Hostile = Callable[["_Handler", str, str, dict], bool]


class ApiError(Exception):
    def __init__(self, status: int, message: str, retry_after: str | None = "0"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class Device:
    device_id: str
    device_type: str = "temperature"
    product_number: str = "102081"
    labels: dict = field(default_factory=dict)


@dataclass
class Project:
    project_id: str
    devices: dict = field(default_factory=dict)  # id -> Device
    events: dict = field(default_factory=dict)  # device id -> [event], any order
    connectors: dict = field(default_factory=dict)  # id -> connector dict


@dataclass
class DeliveryRecord:
    at: float
    ok: bool
    latency_s: float
    event_id: str


class StandIn:
    """The stand-in's state plus its HTTP server (started by `start`, stopped by `stop`)."""

    def __init__(self, *, page_size: int = 100, allow_http_loopback: bool = True):
        self.accounts: dict[str, tuple[str, str]] = {}  # key id -> (secret, email)
        self.tokens: set[str] = set()
        self.projects: dict[str, Project] = {}
        self.deliveries: dict[str, list[DeliveryRecord]] = {}  # connector id -> records
        self.page_size = page_size
        self.allow_http_loopback = allow_http_loopback
        self.down = False
        self.refuse_streams = False  # new stream connections get 503 (a reconnect that fails for a while)
        self.silent = False  # open streams send no pings (a dead connection that stays open)
        self.history_delay_s = 0.0  # events appear in history this long after publishing (DT: up to ~10 s)
        self.hold_history = False  # events published meanwhile stay out of history until release_history()
        self._held: set[str] = set()
        self._published_at: dict[str, float] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of API requests
        self.hostile: Hostile | None = None  # sees each API request first; True: it answered
        self.extra_history: dict[str, list] = {}  # device id -> items answered as they are
        self._faults: list[tuple[int, str, str | None]] = []  # (status, message, Retry-After)
        self._streams: list[queue.Queue] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server: QuietThreadingHTTPServer | None = None

    # --- set-up, used by tests ------------------------------------------------------

    def add_service_account(self, key_id: str, secret: str, email: str) -> None:
        self.accounts[key_id] = (secret, email)

    def add_project(self, project_id: str) -> Project:
        return self.projects.setdefault(project_id, Project(project_id))

    def add_device(self, project_id: str, device: Device) -> None:
        self.add_project(project_id).devices[device.device_id] = device

    def make_event(self, project_id: str, device_id: str, event_type: str, data: dict, ts: datetime) -> dict:
        return {
            "eventId": secrets.token_hex(10),
            "targetName": f"projects/{project_id}/devices/{device_id}",
            "eventType": event_type,
            "data": data,
            "timestamp": rfc3339(ts),
        }

    def publish(self, project_id: str, event: dict, *, deliver: bool = True) -> None:
        """A device published `event`: store it in history, push it to open streams and
        (if `deliver`) POST it once to every ACTIVE connector, like DT's live path."""
        device_id = event["targetName"].rsplit("/", 1)[-1]
        project = self.add_project(project_id)
        with self._lock:
            project.events.setdefault(device_id, []).append(event)
            self._published_at[event["eventId"]] = time.monotonic()
            if self.hold_history:
                self._held.add(event["eventId"])
            streams = list(self._streams)
        for q in streams:
            q.put((project_id, event))
        if deliver:
            for conn in list(project.connectors.values()):
                if conn["status"] == "ACTIVE" and _wants(conn, event["eventType"]):
                    self._deliver(project, conn, event)

    def release_history(self) -> None:
        """Events held back by `hold_history` reach the history now (DT's lag, without a clock)."""
        with self._lock:
            self.hold_history = False
            self._held.clear()

    def set_status(self, project_id: str, connector_id: str, status: str) -> None:
        """What DT does to a connector on its own (e.g. SYSTEM_DISABLED after 5 days)."""
        self.projects[project_id].connectors[connector_id]["status"] = status

    def fail(self, status: int, times: int = 1, message: str = "injected fault",
             retry_after: str | None = "0") -> None:
        """Answer the next `times` API requests with `status` and `message` (a 429 carries
        `Retry-After: retry_after`)."""
        with self._lock:
            self._faults.extend([(status, message, retry_after)] * times)

    def drop_streams(self) -> None:
        """Force every open stream to disconnect."""
        with self._lock:
            for q in self._streams:
                q.put(None)

    # --- server ---------------------------------------------------------------------

    def start(self, port: int = 0) -> "StandIn":
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = QuietThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.drop_streams()
            self._server.shutdown()
            self._server.server_close()

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base + "/v2"

    @property
    def token_url(self) -> str:
        return self.base + "/oauth2/token"

    def env(self, key_id: str, secret: str, email: str) -> dict:
        return {
            "DT_API_URL": self.api_url,
            "DT_TOKEN_URL": self.token_url,
            "DT_SERVICE_ACCOUNT_KEY_ID": key_id,
            "DT_SERVICE_ACCOUNT_SECRET": secret,
            "DT_SERVICE_ACCOUNT_EMAIL": email,
        }

    # --- the API ----------------------------------------------------------------------

    def token(self, form: dict) -> dict:
        assertion = (form.get("assertion") or [""])[0]
        if (form.get("grant_type") or [""])[0] != GRANT_TYPE or not assertion:
            raise ApiError(400, "invalid_request")
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
            secret, email = self.accounts[kid]
            jwt.decode(assertion, secret, algorithms=["HS256"], audience=self.token_url, issuer=email,
                       options={"require": ["exp", "iat", "iss", "aud"]})
        except (KeyError, jwt.PyJWTError):
            raise ApiError(400, "invalid_grant: the service account key is not valid") from None
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return {"access_token": token, "token_type": "bearer", "expires_in": 3600}

    def project(self, project_id: str) -> Project:
        try:
            return self.projects[project_id]
        except KeyError:
            raise ApiError(404, f"project {project_id} not found") from None

    def connector(self, project: Project, connector_id: str) -> dict:
        try:
            return project.connectors[connector_id]
        except KeyError:
            raise ApiError(404, f"data connector {connector_id} not found") from None

    def _check_connector(self, conn: dict) -> None:
        if conn.get("type") not in TYPES:
            raise ApiError(400, f"unknown data connector type {conn.get('type')!r}")
        if conn.get("status") not in STATUSES:
            raise ApiError(400, f"invalid status {conn.get('status')!r}")
        config = conn.get(CONFIG_KEY[conn["type"]])
        if not isinstance(config, dict):
            raise ApiError(400, f"{CONFIG_KEY[conn['type']]} is required for {conn['type']}")
        if conn["type"] == "HTTP_PUSH":
            url = urlsplit(str(config.get("url", "")))
            loopback = url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost")
            if url.scheme != "https" and not (loopback and self.allow_http_loopback):
                raise ApiError(400, "httpConfig.url must be an https URL")
            config.setdefault("signatureSecret", "")
            config.setdefault("headers", {})
        if not all(isinstance(x, str) for x in conn.get("events", [])):
            raise ApiError(400, "events must be a list of event types")

    def create_connector(self, project: Project, body: dict) -> dict:
        conn_id = f"dc{next(self._ids):04d}{secrets.token_hex(4)}"
        conn = {
            "name": f"projects/{project.project_id}/dataconnectors/{conn_id}",
            "displayName": str(body.get("displayName", "")),
            "type": body.get("type"),
            "status": body.get("status", "ACTIVE"),
            "events": list(body.get("events") or []),
            "labels": list(body.get("labels") or []),
        }
        if conn["status"] == "SYSTEM_DISABLED":
            raise ApiError(400, "status SYSTEM_DISABLED is set by DT only")
        if body.get("type") in CONFIG_KEY:
            conn[CONFIG_KEY[body["type"]]] = body.get(CONFIG_KEY[body["type"]])
        self._check_connector(conn)
        project.connectors[conn_id] = conn
        return conn

    def patch_connector(self, project: Project, conn_id: str, body: dict) -> dict:
        conn = dict(self.connector(project, conn_id))
        if "type" in body and body["type"] != conn["type"]:
            raise ApiError(400, "the type of a data connector cannot be changed")
        for key in ("displayName", "status", "events", "labels", CONFIG_KEY.get(conn["type"], "")):
            if key in body:
                conn[key] = body[key]
        if body.get("status") == "SYSTEM_DISABLED":
            raise ApiError(400, "status SYSTEM_DISABLED is set by DT only")
        self._check_connector(conn)
        project.connectors[conn_id] = conn
        return conn

    def metrics(self, conn_id: str) -> dict:
        since = time.time() - METRICS_WINDOW_S
        records = [r for r in self.deliveries.get(conn_id, []) if r.at >= since]
        ok = [r for r in records if r.ok]
        lat = sorted(r.latency_s for r in records)
        p99 = lat[max(0, int(len(lat) * 0.99 + 0.5) - 1)] if lat else 0.0
        return {"metrics": {"successCount": len(ok), "errorCount": len(records) - len(ok),
                            "latency99p": f"{p99:.3f}s"}}

    def body_for(self, project: Project, conn: dict, event: dict) -> bytes:
        """The request body a connector sends for `event`: event, chosen labels, metadata."""
        device = project.devices.get(device_id_of(event))
        resource = None if device is None else {
            "type": device.device_type, "productNumber": device.product_number, "labels": device.labels}
        return connector_body(event, resource, project.project_id, conn.get("labels", []))

    def _deliver(self, project: Project, conn: dict, event: dict) -> bool:
        """One POST, signed like DT, recorded for `:metrics`. No retry queue here."""
        config = conn.get("httpConfig") or {}
        body = self.body_for(project, conn, event)
        headers = {"Content-Type": "application/json", **(config.get("headers") or {})}
        if config.get("signatureSecret"):
            headers["X-Dt-Signature"] = sign(body, config["signatureSecret"])
        url = urlsplit(config.get("url", ""))
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        start = time.monotonic()
        try:
            c = cls(url.hostname, url.port, timeout=10)
            c.request("POST", url.path or "/", body, headers)
            status = c.getresponse().status
            c.close()
        except (OSError, http.client.HTTPException):
            status = 0
        ok = 200 <= status < 300
        with self._lock:
            self.deliveries.setdefault(conn["name"].rsplit("/", 1)[-1], []).append(
                DeliveryRecord(time.time(), ok, time.monotonic() - start, event["eventId"]))
        return ok

    def sync(self, project: Project, conn: dict) -> None:
        """Latest event of each type for every device, pushed in the background."""
        latest: dict[tuple[str, str], dict] = {}
        for device_id, events in project.events.items():
            for e in events:
                key = (device_id, e["eventType"])
                if _wants(conn, e["eventType"]) and (
                        key not in latest or parse_time(e["timestamp"]) > parse_time(latest[key]["timestamp"])):
                    latest[key] = e
        if conn["type"] != "HTTP_PUSH" or conn["status"] != "ACTIVE":
            return
        threading.Thread(target=lambda: [self._deliver(project, conn, e) for e in latest.values()],
                         daemon=True).start()

    def history(self, project: Project, device_id: str, params: dict) -> list[dict]:
        if device_id not in project.devices:
            raise ApiError(404, f"device {device_id} not found")
        now = datetime.now(timezone.utc)
        try:
            start = parse_time(params["startTime"][0]) if "startTime" in params else now - timedelta(hours=24)
            end = parse_time(params["endTime"][0]) if "endTime" in params else now
        except ValueError:
            raise ApiError(400, "startTime/endTime must be RFC 3339") from None
        types = set(params.get("eventTypes", []))
        visible = time.monotonic() - self.history_delay_s
        events = [e for e in project.events.get(device_id, [])
                  if start <= parse_time(e["timestamp"]) < end and (not types or e["eventType"] in types)
                  and self._published_at.get(e["eventId"], 0.0) <= visible and e["eventId"] not in self._held]
        events.sort(key=lambda e: parse_time(e["timestamp"]), reverse=True)  # newest first
        return events + list(self.extra_history.get(device_id, []))


def _wants(conn: dict, event_type: str) -> bool:
    return not conn.get("events") or event_type in conn["events"]


def _page(items: list, key: str, params: dict, default_size: int) -> dict:
    size = int((params.get("pageSize") or [default_size])[0])
    start = int((params.get("pageToken") or ["0"])[0] or 0)
    chunk = items[start:start + size]
    nxt = str(start + size) if start + size < len(items) else ""
    return {key: chunk, "nextPageToken": nxt}


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    server_version = "dt-standin/0.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, status: int, doc: dict, headers: dict | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, retry_after: str | None = "0") -> None:
        headers = {"Retry-After": retry_after} if status == 429 and retry_after is not None else None
        self._send(status, {"error": message, "code": status, "help": "dt-standin"}, headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        s = self.owner
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        try:
            if url.path == "/oauth2/token" and method == "POST":
                return self._send(200, s.token(parse_qs(self._body().decode("utf-8", "replace"))))
            if not url.path.startswith("/v2/"):
                raise ApiError(404, "not found")
            s.requests.append((method, url.path))
            if s.down:
                raise ApiError(503, "service unavailable")
            with s._lock:
                fault = s._faults.pop(0) if s._faults else None
            if fault:
                raise ApiError(*fault)
            if s.hostile is not None and s.hostile(self, method, url.path, params):
                return
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in s.tokens:
                raise ApiError(401, "missing or invalid access token")
            body = {}
            if method in ("POST", "PATCH"):
                raw = self._body()
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    raise ApiError(400, "body is not JSON") from None
            self._route(method, url.path[len("/v2/"):].split("/"), params, body)
        except ApiError as exc:
            self._error(exc.status, exc.message, exc.retry_after)
        except OSError:  # the client hung up (a hostile answer it stopped reading)
            self.close_connection = True

    def _route(self, method: str, parts: list[str], params: dict, body: dict) -> None:
        s = self.owner
        if len(parts) < 3 or parts[0] != "projects":
            raise ApiError(404, "not found")
        project = s.project(parts[1])
        if parts[2] == "devices:stream" and method == "GET":
            if s.refuse_streams:
                raise ApiError(503, "stream unavailable")
            return self._stream(project, params)
        if parts[2] == "devices" and len(parts) == 3 and method == "GET":
            devices = [{"name": f"projects/{project.project_id}/devices/{d.device_id}", "type": d.device_type,
                        "productNumber": d.product_number, "labels": d.labels, "reported": {}}
                       for d in project.devices.values()]
            return self._send(200, _page(devices, "devices", params, s.page_size))
        if parts[2] == "devices" and len(parts) == 5 and parts[4] == "events" and method == "GET":
            return self._send(200, _page(s.history(project, parts[3], params), "events", params, s.page_size))
        if parts[2] != "dataconnectors":
            raise ApiError(404, "not found")
        if len(parts) == 3:
            if method == "GET":
                return self._send(200, _page(list(project.connectors.values()), "dataConnectors", params,
                                             s.page_size))
            if method == "POST":
                return self._send(200, s.create_connector(project, body))
            raise ApiError(405, "method not allowed")
        conn_id, _, verb = parts[3].partition(":")
        conn = s.connector(project, conn_id)
        if verb == "sync" and method == "POST":
            s.sync(project, conn)
            return self._send(200, {})
        if verb == "metrics" and method == "GET":
            return self._send(200, s.metrics(conn_id))
        if verb:
            raise ApiError(404, "not found")
        if method == "GET":
            return self._send(200, conn)
        if method == "PATCH":
            return self._send(200, s.patch_connector(project, conn_id, body))
        if method == "DELETE":
            del project.connectors[conn_id]
            return self._send(200, {})
        raise ApiError(405, "method not allowed")

    def _stream(self, project: Project, params: dict) -> None:
        s = self.owner
        types = set(params.get("event_types", []))
        interval = float((params.get("ping_interval") or ["10s"])[0].rstrip("s") or 10)
        q: queue.Queue = queue.Queue()
        with s._lock:
            s._streams.append(q)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        self.close_connection = True
        try:
            while True:
                try:
                    item = q.get(timeout=interval)
                except queue.Empty:
                    if s.silent:
                        continue
                    ping = {"eventId": "", "targetName": f"projects/{project.project_id}", "eventType": "ping",
                            "data": None, "timestamp": rfc3339(datetime.now(timezone.utc))}
                    self.wfile.write(json.dumps({"result": {"event": ping}}).encode() + b"\n")
                    self.wfile.flush()
                    continue
                if item is None:
                    return
                project_id, event = item
                if project_id == project.project_id and (not types or event["eventType"] in types):
                    self.wfile.write(json.dumps({"result": {"event": event}}).encode() + b"\n")
                    self.wfile.flush()
        except OSError:
            return
        finally:
            with s._lock:
                if q in s._streams:
                    s._streams.remove(q)


# --- hostile answers (for `StandIn.hostile`) ------------------------------------------------


def _route_matches(path: str, suffix: str) -> bool:
    return path.endswith(suffix)


def endless_pages(suffix: str, key: str, per_page: int = 1000, item=None) -> Hostile:
    """A list at a path ending in `suffix` whose `nextPageToken` never runs out (fresh tokens,
    `per_page` items each; `per_page=0`: empty pages)."""
    counter = itertools.count(1)

    def hostile(handler, method, path, params) -> bool:
        if method != "GET" or not _route_matches(path, suffix):
            return False
        n = next(counter)
        items = [item(n, i) if item else {"name": f"projects/p/devices/h{n}-{i}", "type": "temperature"}
                 for i in range(per_page)]
        handler._send(200, {key: items, "nextPageToken": f"t{n}"})
        return True
    return hostile


def huge_answer(suffix: str, size: int, content_length: bool = True) -> Hostile:
    """An answer of `size` bytes (a JSON string that never seems to end), written in chunks."""
    def hostile(handler, method, path, params) -> bool:
        if not _route_matches(path, suffix):
            return False
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if content_length:
            handler.send_header("Content-Length", str(size))
        handler.end_headers()
        handler.close_connection = True
        handler.wfile.write(b'{"devices": "')
        chunk = b"x" * 65536
        sent = 13
        while sent < size:
            handler.wfile.write(chunk[:size - sent])
            sent += min(len(chunk), size - sent)
        return True
    return hostile


def _stream_head(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/x-ndjson")
    handler.end_headers()
    handler.close_connection = True


def stream_lines(lines: list[bytes], then_hold_s: float = 0.0) -> Hostile:
    """The event stream answers with exactly these lines (then stays open `then_hold_s`)."""
    def hostile(handler, method, path, params) -> bool:
        if not path.endswith("devices:stream"):
            return False
        _stream_head(handler)
        for line in lines:
            handler.wfile.write(line + b"\n")
            handler.wfile.flush()
        time.sleep(then_hold_s)
        return True
    return hostile


def endless_line(seconds: float = 30.0) -> Hostile:
    """The event stream sends one line that never ends (for up to `seconds`)."""
    def hostile(handler, method, path, params) -> bool:
        if not path.endswith("devices:stream"):
            return False
        _stream_head(handler)
        handler.wfile.write(b'{"result": {"event": {"eventId": "')
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            handler.wfile.write(b"x" * 65536)
        return True
    return hostile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emulator.dtapi",
        description="A local stand-in for DT's REST API (connectors, devices, history, the event stream), with "
                    "invented devices and history. It prints the variables that point `dtconnector connector`, "
                    "`backfill` and `stream` at it, then runs until Ctrl-C. Every --live seconds one device "
                    "publishes a new temperature event: `stream` shows it, and ACTIVE connectors receive it.",
        epilog="example:\n  python -m emulator.dtapi --port 8900 > dtapi.env &  . ./dtapi.env && "
               "dtconnector stream --duration 30s",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: 0, any free port)")
    p.add_argument("--project", default="demo-project", help="the project id (default: demo-project)")
    p.add_argument("--devices", type=int, default=3, help="devices to invent (default: 3)")
    p.add_argument("--days", type=float, default=3.0, help="history to invent: hourly temperatures (default: 3)")
    p.add_argument("--live", type=duration_arg, default=5.0, metavar="DURATION",
                   help="publish a new event every DURATION; 0 publishes none (default: 5s)")
    args = p.parse_args(argv)
    s = StandIn().start(args.port)
    key_id, secret, email = "demo-key", secrets.token_urlsafe(24), "demo@example.serviceaccount"
    s.add_service_account(key_id, secret, email)
    s.add_project(args.project)
    now = datetime.now(timezone.utc)
    for i in range(args.devices):
        d = Device(f"dev{i:02d}", labels={"room": f"r{i}"})
        s.add_device(args.project, d)
        for h in range(int(args.days * 24), 0, -1):
            ts = now - timedelta(hours=h)
            s.publish(args.project, s.make_event(args.project, d.device_id, "temperature",
                                                 {"temperature": {"value": 20 + h % 5, "updateTime": rfc3339(ts)}},
                                                 ts), deliver=False)
    print("# DT REST API stand-in; these variables point dtconnector at it:")
    for k, v in s.env(key_id, secret, email).items():
        print(f"export {k}={v}")
    print(f"export DT_PROJECT_ID={args.project}", flush=True)
    try:
        n = 0
        while True:
            if not args.live:
                time.sleep(3600)
                continue
            time.sleep(args.live)
            n += 1
            ts = datetime.now(timezone.utc)
            s.publish(args.project, s.make_event(args.project, f"dev{n % args.devices:02d}", "temperature",
                                                 {"temperature": {"value": 20 + n % 7, "updateTime": rfc3339(ts)}},
                                                 ts))
    except KeyboardInterrupt:
        s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
