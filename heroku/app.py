"""The web dyno: a Flask WSGI `app` for gunicorn (Procfile: ``gunicorn heroku.app:app``).

POST on ``/`` or any path is a DT event, handed to core's Receiver as the exact bytes
received; ``GET /healthz`` pings Redis. Every other method on an event path gets core's 405.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Flask, Response, request

from core.config import ConfigError
from core.http import Headers, Request
from core.http import Response as CoreResponse

from . import runtime

app = Flask(__name__)
log = logging.getLogger("dtconnector.heroku")

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _json(status: int, payload: dict, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")), status=status, headers=headers, content_type="application/json"
    )


def _not_configured(exc: ConfigError) -> Response:
    log.error("receiver is not configured: %s", exc)
    return _json(503, {"error": "unavailable", "reason": f"receiver is not configured ({exc})"}, {"Retry-After": "5"})


@app.get("/healthz")
def healthz() -> Response:
    try:
        runtime.redis().ping()
    except ConfigError as exc:
        return _not_configured(exc)
    except Exception as exc:  # redis.exceptions.RedisError, without importing redis here
        return _json(503, {"status": "unavailable", "redis": type(exc).__name__})
    return _json(200, {"status": "ok"})


# provide_automatic_options=False: Flask would answer OPTIONS itself with 200; core's 405
# is the answer on every platform.
@app.route("/", defaults={"path": ""}, methods=_METHODS, provide_automatic_options=False)
@app.route("/<path:path>", methods=_METHODS, provide_automatic_options=False)
def receive(path: str) -> Response:
    started = time.perf_counter()
    try:
        receiver = runtime.receiver()
    except ConfigError as exc:
        return _not_configured(exc)
    limit = receiver.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        # Refused from the header, before reading: core would answer the same after reading.
        refused = CoreResponse(413, {"error": "payload_too_large", "limit": limit})
        receiver.record(refused, started)
        return _json(refused.status, refused.payload, {"Connection": "close"})
    body = request.get_data(cache=False)
    result = receiver.handle(Request(request.method, body, Headers(list(request.headers.items())), request.path))
    return Response(result.body, status=result.status, headers=result.all_headers())
