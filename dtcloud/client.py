"""DT's REST API through DT's own client, `disruptive`, with errors a user can act on.

Why a wrapper: the official client owns auth (service-account JWT exchanged for a token),
pagination and retries (5xx with backoff, 429 after Retry-After); we only (1) point it at
`DT_API_URL` / `DT_TOKEN_URL` when set, (2) use its low-level request helper
(`disruptive.requests.DTRequest`) so we get DT's raw JSON (the typed `DataConnector` knows
only HTTP_PUSH and drops fields a diff needs), and (3) turn every failure into `DTError`
with a one-line message and the CLI's exit status, so no command ever prints a traceback.

`disruptive` is imported here only, and this module is imported only by the CLI
subcommands: never by `core/` or a cloud entry point (it pulls in `requests`).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

CREDENTIAL_VARS = ("DT_SERVICE_ACCOUNT_KEY_ID", "DT_SERVICE_ACCOUNT_SECRET", "DT_SERVICE_ACCOUNT_EMAIL")


class DTError(Exception):
    """A failure to report in one line; `exit_code` 2 = usage, credentials or DT unreachable."""

    def __init__(self, message: str, exit_code: int = 2, retryable: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.retryable = retryable  # DT unreachable, failing or rate limiting: try again later


def have_credentials(env: Mapping[str, str] = os.environ) -> bool:
    return all(env.get(v) for v in CREDENTIAL_VARS) or bool(env.get("DT_CREDENTIALS_FILE"))


def _import_client():
    try:
        import disruptive
        import disruptive.errors
        import disruptive.requests
    except ImportError:
        raise DTError("DT's Python client is not installed: pip install 'dtconnector[dt]'") from None
    return disruptive


class Client:
    """One configured connection to DT's API (or to the stand-in)."""

    def __init__(self, env: Mapping[str, str] = os.environ):
        dt = _import_client()
        self._dt = dt
        if not have_credentials(env):
            raise DTError("no DT credentials: set " + ", ".join(CREDENTIAL_VARS)
                          + " (a service account of the project, role Project Developer or higher)")
        if env.get("DT_API_URL"):
            dt.base_url = env["DT_API_URL"].rstrip("/")
        try:
            if all(env.get(v) for v in CREDENTIAL_VARS):
                auth = dt.Auth.service_account(*(env[v] for v in CREDENTIAL_VARS))
            else:
                auth = dt.Auth.init()  # DT_CREDENTIALS_FILE, as the client reads it
        except (OSError, ValueError, KeyError, dt.errors.DTApiError) as exc:
            raise DTError(f"cannot load DT credentials: {type(exc).__name__}") from None
        if env.get("DT_TOKEN_URL"):
            auth.token_endpoint = env["DT_TOKEN_URL"]
        dt.default_auth = auth
        self.auth = auth
        self.base_url = dt.base_url

    # --- requests -------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> dict:
        """One API call (the client retries 5xx and 429); failures become `DTError`."""
        req = self._dt.requests.DTRequest
        fn = {"GET": req.get, "POST": req.post, "PATCH": req.patch, "DELETE": req.delete}[method]
        return self._guard(lambda: fn(path, auth=self.auth, **kwargs), path)

    def pages(self, path: str, key: str, params: dict | None = None) -> list[dict]:
        """Every item of a paginated list (the client follows `nextPageToken`)."""
        return self._guard(lambda: self._dt.requests.DTRequest.paginated_get(
            path, key, params=dict(params or {}), auth=self.auth), path)

    def token(self) -> str:
        """`Bearer …` for requests the client cannot make itself (the stream)."""
        return self._guard(self.auth.get_token, "token")

    def _guard(self, fn, what: str):
        errors = self._dt.errors
        try:
            return fn()
        except errors.Unauthorized:
            raise DTError("DT refused the service-account credentials (check DT_SERVICE_ACCOUNT_KEY_ID, "
                          "_SECRET and _EMAIL, and DT_TOKEN_URL if set)") from None
        except errors.Forbidden:
            raise DTError(f"the service account may not do this ({what}): give it a role in the project") from None
        except errors.NotFound:
            raise DTError(f"not found: {self._name(what)}") from None
        except errors.TooManyRequests:
            raise DTError("DT is rate limiting us (429) and did not say when to retry: try again later",
                          retryable=True) from None
        except (errors.ServerError, errors.ConnectionError):
            raise DTError(f"DT's API is unreachable or failing at {self.base_url} (retried): try again later",
                          retryable=True) from None
        except errors.BadRequest as exc:
            raise DTError(f"DT refused the request: {_message(exc)}") from None
        except errors.DTApiError as exc:
            raise DTError(f"DT answered with an error: {_message(exc)}") from None
        except Exception as exc:  # requests' own errors, a non-JSON answer: never a traceback
            raise DTError(f"cannot talk to DT at {self.base_url}: {type(exc).__name__}", retryable=True) from None

    @staticmethod
    def _name(path: str) -> str:
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[2] == "dataconnectors":
            return f"connector {parts[3].split(':')[0]} in project {parts[1]}"
        if len(parts) >= 4 and parts[2] == "devices":
            return f"device {parts[3]} in project {parts[1]}"
        if len(parts) >= 2 and parts[0] == "projects":
            return f"project {parts[1]} (or the service account has no access to it)"
        return path

    # --- resources ------------------------------------------------------------------

    def connectors(self, project: str) -> list[dict]:
        return self.pages(f"/projects/{project}/dataconnectors", "dataConnectors")

    def devices(self, project: str, device_ids: list[str] | None = None) -> list[dict]:
        params = {"device_ids": device_ids} if device_ids else {}
        return self.pages(f"/projects/{project}/devices", "devices", params)

    def events(self, project: str, device: str, start: str, end: str, types: list[str] | None) -> list[dict]:
        params: dict = {"startTime": start, "endTime": end}
        if types:
            params["eventTypes"] = list(types)
        return self.pages(f"/projects/{project}/devices/{device}/events", "events", params)

    def stream_lines(self, project: str, params: dict, read_timeout_s: float) -> Iterator[bytes]:
        """The raw NDJSON lines of DT's event stream. The client's own `DTRequest.stream`
        reconnects by itself and hides the gap; we must know when a reconnect happens to
        backfill it, so this opens the stream once with the same library (`requests`), URL
        and token, and leaves reconnecting to the caller. Raises `DTError` on failure."""
        import requests

        url = f"{self.base_url}/projects/{project}/devices:stream"
        headers = {"Authorization": self.token(), "User-Agent": "dtconnector"}
        try:
            with requests.get(url, params=params, headers=headers, stream=True,
                              timeout=(10, read_timeout_s)) as response:
                if response.status_code != 200:
                    self._guard(lambda: self._raise_for(response), f"/projects/{project}/devices:stream")
                yield from response.iter_lines()
        except requests.RequestException as exc:
            raise DTError(f"stream interrupted: {type(exc).__name__}", retryable=True) from None

    def _raise_for(self, response) -> None:
        try:
            data = response.json()
        except ValueError:
            data = {}
        error, _, _ = self._dt.errors.parse_api_status_code(response.status_code, data, response.headers, 99)
        raise error or self._dt.errors.UnknownError(data)


def _message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, dict):
        return str(arg.get("error") or arg.get("message") or arg)
    return str(arg).splitlines()[0] if str(arg) else type(exc).__name__
