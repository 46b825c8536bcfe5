"""Ingest entry point: `main(args)` for a Code Engine function or an OpenWhisk raw web action.

Code Engine calls ``main(args)`` with ``__ce_method``, ``__ce_headers``, ``__ce_path`` and
``__ce_body`` (Base64 for JSON and binary content types, a plain string for text ones; it
also spreads a JSON body's top-level keys and the query parameters into `args`, which are
ignored here: only the exact bytes are signed). OpenWhisk raw web actions (``--web raw``)
pass ``__ow_method`` (lower case), ``__ow_headers``, ``__ow_path``, ``__ow_query`` and
``__ow_body`` (Base64 for JSON). Both get ``{"statusCode", "headers", "body"}`` back, `body`
being the JSON object.

Which platform runs us is read from the process environment, never from `args`: a request
can put any key into Code Engine's `args` (``__ow_method`` included), but not into the
environment. OpenWhisk's runtime sets ``__OW_ACTION_NAME`` there for every activation.

Clients and the `Receiver` are built once per container, on the first request, from the
environment (Code Engine) or the environment plus the action's bound parameters (OpenWhisk,
which has no environment variables of its own for an action's settings).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Mapping

from core import logs
from core.config import ConfigError
from core.http import Headers, Request

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass
class Ingest:
    """What one container builds once: the ports and the receiver."""

    receiver: object
    claims: object
    outbox: object


_lock = threading.Lock()
_ingest: Ingest | None = None


def build_ingest(env=None) -> Ingest:
    from core.config import Settings
    from core.receiver import Receiver

    from .claims import CloudantClaimStore
    from .cloudant import CloudantConfig, Docs, RevCache, build_service
    from .metrics import RECORDER
    from .outbox import CloudantOutbox

    env = os.environ if env is None else env
    config = CloudantConfig.from_env(env)
    service = build_service(config)
    cache = RevCache()  # shared: enqueue and complete reuse the claim write's _rev
    claims = CloudantClaimStore(Docs(service, config.db, cache))
    outbox = CloudantOutbox(Docs(service, config.db, cache))
    return Ingest(Receiver(Settings.from_env(env), claims, outbox, metrics=RECORDER), claims, outbox)


def ingest(bound: Mapping[str, str] | None = None) -> Ingest:
    """The container's ingest, built on first use from the environment (Code Engine), or
    from the environment plus the action's bound parameters (OpenWhisk has no env vars)."""
    global _ingest
    if _ingest is None:
        with _lock:
            if _ingest is None:
                env = {**os.environ, **(bound or {})}
                logs.configure(env.get("DT_LOG_LEVEL", "INFO"))
                _ingest = build_ingest(env)
    return _ingest


#: Set by OpenWhisk's action runtime in the process environment for every activation.
OPENWHISK_MARKER = "__OW_ACTION_NAME"
#: Settings an OpenWhisk action may take from its bound parameters.
SETTING_PREFIXES = ("DT_", "CLOUDANT_")


def on_openwhisk(environ: Mapping[str, str] | None = None) -> bool:
    """True when OpenWhisk's runtime runs us; decided by the environment alone."""
    return OPENWHISK_MARKER in (os.environ if environ is None else environ)


def bound_parameters(args: Mapping[str, object], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """An OpenWhisk action's settings (``wsk action create -p DT_HANDLERS ...``), which it
    receives as parameters beside the request.

    Read only on OpenWhisk (the environment says so) and only for a raw web action's request
    (``__ow_query`` present): a raw action never merges the request's body or query into
    `args`, and the deploy's ``final`` annotation stops a request overriding a bound
    parameter. Anywhere else `args` carries what the sender chose, so nothing is read.
    """
    if not on_openwhisk(environ) or not isinstance(args.get("__ow_query"), str):
        return {}
    return {k: v for k, v in args.items() if k.startswith(SETTING_PREFIXES) and isinstance(v, str)}


def reset() -> None:
    """Forget the container's clients (tests, or after the environment changed)."""
    global _ingest
    with _lock:
        _ingest = None


def body_bytes(value: object) -> bytes:
    """The raw request body from ``__ce_body`` / ``__ow_body``: Base64 or plain text.

    A DT body is a JSON object, whose text always contains ``{`` and so is never valid
    Base64: a string made only of Base64 characters (with correct padding) is decoded,
    anything else is the body itself as UTF-8.
    """
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):  # a platform that parsed the JSON for us: signature will fail
        return json.dumps(value).encode("utf-8")
    compact = value.strip()
    if compact and len(compact) % 4 == 0 and _BASE64.fullmatch(compact):
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            pass
    return value.encode("utf-8", "surrogatepass")


def to_request(args: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Request:
    """The HTTP request in `args`, read only in the running platform's own shape: on Code
    Engine a body's ``__ow_*`` keys are data, on OpenWhisk ``__ce_*`` keys are."""
    prefix = "__ow_" if on_openwhisk(environ) else "__ce_"
    if f"{prefix}method" not in args:
        # Invoked directly (not through HTTP): no method, answered 405 by the receiver.
        return Request(method="", body=b"")
    headers = args.get(f"{prefix}headers")
    return Request(
        method=str(args.get(f"{prefix}method") or "").upper(),
        body=body_bytes(args.get(f"{prefix}body")),
        headers=Headers(headers if isinstance(headers, dict) else None),
        path=str(args.get(f"{prefix}path") or "/"),
    )


def _reply(status: int, payload: dict, headers: dict[str, str]) -> dict:
    return {"statusCode": status, "headers": headers, "body": payload}


def main(args: dict) -> dict:
    args = args if isinstance(args, dict) else {}
    try:
        handler = ingest(bound_parameters(args))
    except ConfigError as exc:  # names the variable, never its value
        logs.event_log(logging.ERROR, "receiver is not configured", error=str(exc))
        return _reply(
            503,
            {"error": "unavailable", "reason": f"receiver is not configured: {exc}"},
            {"Content-Type": "application/json", "Retry-After": "5"},
        )
    response = handler.receiver.handle(to_request(args))
    return _reply(response.status, response.payload, response.all_headers())
