"""`heroku.asgi.app` (Redis) mounted on a path in Starlette, and `heroku.asgi.wsgi_app` in
Flask, exactly as the README documents them (Flask is a test dependency here, not ours)."""

from __future__ import annotations

import io

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from core.metrics import REQUESTS
from tests.dt import event_body, signed
from tests.metrics_native import key


def test_asgi_app_mounted_in_starlette_on_redis(h):
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from heroku.asgi import app as dt

    app = Starlette(routes=[Mount("/dt", app=dt)])
    body = event_body()
    with TestClient(app) as client:
        assert client.post("/dt/", content=body, headers=signed(body)).status_code == 202
        assert client.post("/dt/", content=body, headers=signed(body)).status_code == 200
        assert client.post("/dt/", content=body, headers={"X-Dt-Signature": "x"}).status_code == 401
        assert client.get("/dt/healthz").json() == {"status": "ok"}
    assert h.queue_depth() == 1


def test_wsgi_app_mounted_in_flask_on_redis(h):
    from heroku.asgi import wsgi_app

    app = Flask(__name__)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/dt": wsgi_app})
    client = app.test_client()
    body = event_body()
    assert client.post("/dt/", data=body, headers=signed(body)).status_code == 202
    assert client.post("/dt/", data=body, headers=signed(body)).status_code == 200
    assert client.post("/dt/", data=b"{}", headers={"Transfer-Encoding": "gzip"}).status_code == 400
    too_big = client.post("/dt/", input_stream=io.BytesIO(b""), environ_overrides={"CONTENT_LENGTH": str(256 * 1024 + 1)})
    assert too_big.status_code == 413
    assert client.get("/dt/healthz").get_json() == {"status": "ok"}
    assert h.queue_depth() == 1
    got = h.metrics()  # every answer counted, the 413 refused from the header too
    assert got[key(REQUESTS, status="202", reason="accepted")] == 1
    assert got[key(REQUESTS, status="413", reason="payload_too_large")] == 1
