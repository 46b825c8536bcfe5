"""DT's REST API, every read bounded, every failure one line a user can act on.

Why our own small client rather than DT's `disruptive`: a command must stop, with a clear
message, when the API (or something pretending to be it) answers without end: a 100 MB body,
a list whose `nextPageToken` never runs out, a stream line that never ends, a `Retry-After`
of a day. DT's client reads every answer whole, follows page tokens forever and sleeps
whatever it is told, with module-wide settings. What DT's API asks of a client is small and
documented (DT's developer docs, https://docs.developer.disruptive-technologies.com:
"Authentication: OAuth2", "Pagination", "Streaming Events" and the REST API reference): a
service-account JWT (HS256; PyJWT) exchanged for a bearer token, JSON over HTTPS,
`nextPageToken` pagination, NDJSON for the stream. `requests` (the `dt` extra) does the
HTTP: one connection pool per command, proxies and certificates as usual.

Every failure becomes `DTError` with a one-line message (text from DT made printable) and
the CLI's exit status 2, so no command ever prints a traceback. `retryable` marks what
waiting may fix (DT unreachable, failing, rate limiting, a stream cut): `stream` reconnects
on those.

Imported only by the CLI subcommands (`connector`, `backfill`, `stream`): never by `core/` or
a cloud entry point.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from dtconnector.installation import install_hint

from .text import printable

CREDENTIAL_VARS = ("DT_SERVICE_ACCOUNT_KEY_ID", "DT_SERVICE_ACCOUNT_SECRET", "DT_SERVICE_ACCOUNT_EMAIL")
DT_API_URL = "https://api.disruptive-technologies.com/v2"
DT_TOKEN_URL = "https://identity.disruptive-technologies.com/oauth2/token"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
USER_AGENT = "dtconnector"
MiB = 1 << 20


class DTError(Exception):
    """A failure to report in one line; `exit_code` 2 = usage, credentials, DT unreachable or
    a malformed answer."""

    def __init__(self, message: str, exit_code: int = 2, retryable: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.retryable = retryable  # DT unreachable, failing or rate limiting: try again later


@dataclass(frozen=True)
class Limits:
    """How much of DT's API one command will read before it stops and says so. Far above
    anything DT sends (an event is under 1 KiB, a page at most 1,000 items), far below what
    would exhaust a laptop."""

    max_response_bytes: int = 16 * MiB  # one answer
    max_pages: int = 10_000  # one paginated list
    max_items: int = 100_000  # one paginated list (a device's window of history: narrow --since past it)
    max_line_bytes: int = 1 * MiB  # one line of the event stream
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # silence on an open connection
    request_deadline_s: float = 120.0  # one request, first byte sent to last byte read
    list_deadline_s: float = 3600.0  # one paginated list: every page and every retry
    attempts: int = 4  # per request, for 5xx, 429 and connection errors
    max_retry_after_s: float = 60.0  # the longest `Retry-After` we honour


def have_credentials(env: Mapping[str, str] = os.environ) -> bool:
    return all(env.get(v) for v in CREDENTIAL_VARS) or bool(env.get("DT_CREDENTIALS_FILE"))


def _requests():
    try:
        import requests
    except ImportError:
        raise DTError(f"the `dt` extra is not installed (it needs `requests`): {install_hint('dt')}") from None
    return requests


def _network_errors() -> tuple:
    """What a request or a read may raise: requests' own errors, urllib3's (a `read1` on the
    raw response raises those unwrapped: a read timeout, a cut chunked body) and the socket's."""
    import urllib3.exceptions

    return (_requests().RequestException, urllib3.exceptions.HTTPError, OSError)


@dataclass
class ServiceAccount:
    key_id: str
    secret: str
    email: str
    token_url: str = DT_TOKEN_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServiceAccount":
        token_url = env.get("DT_TOKEN_URL") or DT_TOKEN_URL
        if all(env.get(v) for v in CREDENTIAL_VARS):
            return cls(*(env[v] for v in CREDENTIAL_VARS), token_url=token_url)
        path = env.get("DT_CREDENTIALS_FILE")
        if not path:
            raise DTError("no DT credentials: set " + ", ".join(CREDENTIAL_VARS)
                          + " (a service account of the project, role Project Developer or higher)")
        try:
            with open(path, "rb") as f:
                raw = f.read(64 * 1024 + 1)
            if len(raw) > 64 * 1024:
                raise ValueError("larger than 64 KiB")
            account = json.loads(raw)["serviceAccount"]
            return cls(str(account["keyId"]), str(account["secret"]), str(account["email"]),
                       env.get("DT_TOKEN_URL") or str(account.get("tokenEndpoint") or DT_TOKEN_URL))
        except OSError as exc:
            raise DTError(f"cannot read DT_CREDENTIALS_FILE {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise DTError(f"DT_CREDENTIALS_FILE {path} is not a DT service-account file "
                          f"({{\"serviceAccount\": {{\"keyId\", \"secret\", \"email\"}}}}): {type(exc).__name__}") from None

    def assertion(self) -> str:
        """The JWT DT's token endpoint exchanges for an access token (DT's docs: "Authentication: OAuth2")."""
        import jwt

        now = int(time.time())
        return jwt.encode({"iat": now, "exp": now + 3600, "aud": self.token_url, "iss": self.email},
                          self.secret, algorithm="HS256", headers={"kid": self.key_id})


class Client:
    """One configured connection (pool) to DT's API, or to the stand-in (`DT_API_URL`)."""

    def __init__(self, env: Mapping[str, str] = os.environ, limits: Limits = Limits()):
        requests = _requests()
        self.account = ServiceAccount.from_env(env)
        self.base_url = (env.get("DT_API_URL") or DT_API_URL).rstrip("/")
        self.limits = limits
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._token = ""
        self._token_expires = 0.0

    def close(self) -> None:
        self._session.close()

    # --- the bearer token -----------------------------------------------------------

    def token(self) -> str:
        """`Bearer …`, fetched again a minute before it expires."""
        if not self._token or time.monotonic() > self._token_expires:
            doc = self._exchange()
            access, expires = doc.get("access_token"), doc.get("expires_in", 3600)
            if not isinstance(access, str) or not access or not isinstance(expires, (int, float)):
                raise DTError(f"DT's token endpoint {printable(self.account.token_url)} answered without an "
                              "access_token: is DT_TOKEN_URL right?")
            self._token = f"Bearer {access}"
            self._token_expires = time.monotonic() + max(0.0, float(expires) - 60)
        return self._token

    def _exchange(self) -> dict:
        form = {"assertion": self.account.assertion(), "grant_type": GRANT_TYPE}
        deadline = time.monotonic() + self.limits.request_deadline_s
        status, _, doc = self._send("POST", self.account.token_url, "the token endpoint", deadline,
                                    data=form, authorized=False)
        if status in (400, 401, 403):
            raise DTError("DT refused the service-account credentials (check DT_SERVICE_ACCOUNT_KEY_ID, "
                          "_SECRET and _EMAIL, and DT_TOKEN_URL if set)")
        if status != 200:
            raise DTError(f"DT's token endpoint answered HTTP {status}: {_message(doc)}", retryable=status >= 500)
        return doc

    # --- requests -------------------------------------------------------------------

    def call(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None,
             deadline: float | None = None) -> dict:
        """One API call, retried on 5xx, 429 and connection errors; any failure is `DTError`."""
        deadline = deadline or time.monotonic() + self.limits.request_deadline_s * self.limits.attempts
        what = f"{method} {path}"
        status, _, doc = self._send(method, self.base_url + path, what, deadline, params=params, json_body=body)
        if 200 <= status < 300:
            return doc
        message = _message(doc)
        if status == 401:
            raise DTError("DT refused our access token (check the service account and DT_TOKEN_URL)")
        if status == 403:
            raise DTError(f"the service account may not do this ({what}): give it a role in the project")
        if status == 404:
            raise DTError(f"not found: {self._name(path)}")
        if status == 429:
            raise DTError("DT is rate limiting us (429): try again later", retryable=True)
        if status >= 500:
            raise DTError(f"DT's API is failing at {self.base_url} (HTTP {status} after {self.limits.attempts} "
                          f"attempts): try again later", retryable=True)
        if status == 400:
            raise DTError(f"DT refused the request ({what}): {message}")
        raise DTError(f"DT answered HTTP {status} to {what}: {message}")

    def _send(self, method: str, url: str, what: str, deadline: float, *, params=None, json_body=None,
              data=None, authorized: bool = True) -> tuple[int, Mapping[str, str], dict]:
        """(status, headers, JSON object) after the retries; a body that is not a JSON object is
        `{}` for errors and a `DTError` for 2xx."""
        lim = self.limits
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            headers = {"Authorization": self.token()} if authorized else {}
            try:
                with self._session.request(method, url, params=params, json=json_body, data=data, headers=headers,
                                           stream=True, timeout=(lim.connect_timeout_s, lim.read_timeout_s)) as r:
                    raw = read_capped(r, lim.max_response_bytes, min(deadline, time.monotonic()
                                                                     + lim.request_deadline_s), what)
                    status, rheaders = r.status_code, r.headers
            except _network_errors() as exc:
                if attempt < lim.attempts and self._pause(_backoff(attempt), deadline):
                    continue
                raise DTError(f"cannot reach DT's API ({printable(url.split('?')[0])}): {_network_error(exc)}",
                              retryable=True) from None
            if status == 401 and authorized and not refreshed:
                refreshed = True  # an expired token: one fresh one
                self._token = ""
                continue
            if (status == 429 or status >= 500) and attempt < lim.attempts:
                wait = _retry_after(rheaders.get("Retry-After"), attempt)
                if wait <= lim.max_retry_after_s and self._pause(wait, deadline):
                    continue
            try:
                doc = json.loads(raw) if raw.strip() else {}
            except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python parses
                doc = None
            if not isinstance(doc, dict):
                if 200 <= status < 300:
                    raise DTError(f"DT's answer to {what} is not a JSON object: {printable(raw[:80], 80)}")
                doc = {"error": raw[:200].decode("utf-8", "replace")} if raw else {}
            return status, rheaders, doc

    @staticmethod
    def _pause(seconds: float, deadline: float) -> bool:
        if time.monotonic() + seconds > deadline:
            return False
        time.sleep(seconds)
        return True

    def pages(self, path: str, key: str, params: dict | None = None) -> list[dict]:
        """Every item of a paginated list, within `Limits` (pages, items, total time)."""
        lim = self.limits
        params = dict(params or {})
        deadline = time.monotonic() + lim.list_deadline_s
        items: list[dict] = []
        seen_tokens: set[str] = set()
        for page in range(1, lim.max_pages + 1):
            doc = self.call("GET", path, params=params, deadline=deadline)
            chunk = doc.get(key, [])
            token = doc.get("nextPageToken", "")
            if not isinstance(chunk, list) or not isinstance(token, str):
                raise DTError(f"DT's answer to GET {path} is malformed: `{key}` is not a list or "
                              "`nextPageToken` not a string")
            items += chunk
            if len(items) > lim.max_items:
                raise DTError(f"DT's list at {path} has more than {lim.max_items} items: stopped reading "
                              "(a broken or hostile API endpoint?)")
            if not token:
                return items
            if token in seen_tokens:
                raise DTError(f"DT's list at {path} repeats a page token after {page} pages: stopped reading")
            seen_tokens.add(token)
            params["pageToken"] = token
        raise DTError(f"DT's list at {path} did not end after {lim.max_pages} pages: stopped reading "
                      "(a broken or hostile API endpoint?)")

    def stream_lines(self, project: str, params: dict, read_timeout_s: float) -> Iterator[bytes]:
        """The complete lines of DT's event stream, each at most `max_line_bytes` (a partial
        line cut by a disconnect is dropped). Reconnecting is the caller's: it must know when
        a reconnect happens to fetch the gap. Raises `DTError` (retryable when waiting may help)."""
        path = f"/projects/{project}/devices:stream"
        headers = {"Authorization": self.token()}
        try:
            with self._session.get(self.base_url + path, params=params, headers=headers, stream=True,
                                   timeout=(self.limits.connect_timeout_s, read_timeout_s)) as r:
                if r.status_code != 200:
                    raw = read_capped(r, 64 * 1024, time.monotonic() + read_timeout_s, f"GET {path}")
                    try:
                        doc = json.loads(raw)
                    except (ValueError, RecursionError):
                        doc = {}
                    raise self._stream_error(r.status_code, doc if isinstance(doc, dict) else {}, path)
                yield from _lines(r, self.limits.max_line_bytes, path)
        except _network_errors() as exc:
            raise DTError(f"stream interrupted: {_network_error(exc)}", retryable=True) from None

    def _stream_error(self, status: int, doc: dict, path: str) -> DTError:
        if status == 401:
            self._token = ""
            return DTError("DT refused our access token for the stream", retryable=True)
        if status == 404:
            return DTError(f"not found: {self._name(path)}")
        if status == 403:
            return DTError("the service account may not read the event stream: give it a role in the project")
        if status == 429 or status >= 500:
            return DTError(f"DT's stream answered HTTP {status}", retryable=True)
        return DTError(f"DT's stream answered HTTP {status}: {_message(doc)}")

    @staticmethod
    def _name(path: str) -> str:
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[2] == "dataconnectors":
            return f"connector {printable(parts[3].split(':')[0])} in project {printable(parts[1])}"
        if len(parts) >= 4 and parts[2] == "devices":
            return f"device {printable(parts[3])} in project {printable(parts[1])}"
        if len(parts) >= 2 and parts[0] == "projects":
            return f"project {printable(parts[1].split(':')[0])} (or the service account has no access to it)"
        return printable(path)

    # --- resources ------------------------------------------------------------------

    def connectors(self, project: str) -> list[dict]:
        return [c for c in self.pages(f"/projects/{project}/dataconnectors", "dataConnectors") if isinstance(c, dict)]

    def devices(self, project: str, device_ids: list[str] | None = None) -> list[dict]:
        """The project's devices as DT lists them; an entry without a string `name` is malformed."""
        params = {"device_ids": list(device_ids)} if device_ids else {}
        devices = self.pages(f"/projects/{project}/devices", "devices", params)
        for d in devices:
            if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
                raise DTError(f"DT's device list for project {printable(project)} has an entry without a name: "
                              f"{printable(json.dumps(d)[:80])}")
        return devices

    def events(self, project: str, device: str, start: str, end: str, types: list[str] | None) -> list:
        """A device's history in [start, end), as DT returns it (newest first; items unchecked)."""
        params: dict = {"startTime": start, "endTime": end}
        if types:
            params["eventTypes"] = list(types)
        return self.pages(f"/projects/{project}/devices/{device}/events", "events", params)


# --- reading bounded --------------------------------------------------------------------


def read_capped(response, cap: int, deadline: float, what: str) -> bytes:
    """The whole body, or `DTError` past `cap` bytes or `deadline` (checked after every socket
    read: `read1` returns after one, so a server trickling bytes cannot hold us)."""
    too_big = DTError(f"DT's answer to {what} is larger than {_size(cap)}: stopped reading "
                      "(a broken or hostile API endpoint?)")
    try:
        if int(response.headers.get("Content-Length") or 0) > cap:
            raise too_big
    except ValueError:
        pass
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = response.raw.read1(64 * 1024, decode_content=True)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > cap:
            raise too_big
        if time.monotonic() > deadline:
            raise DTError(f"DT's answer to {what} took too long to arrive: stopped reading", retryable=True)
        parts.append(chunk)


def _lines(response, cap: int, path: str) -> Iterator[bytes]:
    buffer = b""
    while True:
        chunk = response.raw.read1(64 * 1024, decode_content=True)
        if not chunk:
            return  # a partial line at the end was cut by the disconnect: the gap fetch covers it
        buffer += chunk
        while True:
            line, sep, rest = buffer.partition(b"\n")
            if not sep:
                break
            buffer = rest
            yield line.rstrip(b"\r")
        if len(buffer) > cap:
            raise DTError(f"DT's stream ({path}) sent a line longer than {_size(cap)}: stopped reading "
                          "(a broken or hostile API endpoint?)")


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB"


def _backoff(attempt: int) -> float:
    return min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        seconds = float(value) if value is not None else _backoff(attempt)
    except ValueError:
        seconds = _backoff(attempt)
    return max(0.0, seconds)


def _network_error(exc: Exception) -> str:
    """`ConnectionError: … [Errno 111] Connection refused` -> `connection refused`."""
    text = str(exc)
    for needle, name in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                         ("nodename nor servname", "unknown host"), ("timed out", "timed out"),
                         ("Connection reset", "connection reset"), ("CERTIFICATE_VERIFY_FAILED", "TLS certificate "
                                                                                                 "not trusted")):
        if needle in text:
            return name
    return type(exc).__name__


def _message(doc: Any) -> str:
    """DT's error text (`{"error": …, "code": …, "help": …}`), printable, one line."""
    if isinstance(doc, dict):
        value = doc.get("error") or doc.get("message") or ""
        if isinstance(value, dict):
            value = value.get("message") or value.get("error") or json.dumps(value)
        if value:
            return printable(value, 200)
    return "(no message)"
