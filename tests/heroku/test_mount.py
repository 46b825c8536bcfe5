"""`heroku.asgi` (Redis) mounted on a path in Starlette, and `wsgi_app` in Flask."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from tests.dt import event_body, signed


def test_asgi_app_mounted_in_starlette_on_redis(h):
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from heroku.asgi import LazyIngest, ReceiverASGI, health

    app = Starlette(routes=[Mount("/dt", app=ReceiverASGI(LazyIngest(), health))])
    body = event_body()
    with TestClient(app) as client:
        assert client.post("/dt/", content=body, headers=signed(body)).status_code == 202
        assert client.post("/dt/", content=body, headers=signed(body)).status_code == 200
        assert client.post("/dt/", content=body, headers={"X-Dt-Signature": "x"}).status_code == 401
        assert client.get("/dt/healthz").json() == {"status": "ok"}
    assert h.queue_depth() == 1


def test_wsgi_app_mounted_in_flask_on_redis(h):
    from heroku.asgi import ReceiverWSGI, handle, health

    app = Flask(__name__)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/dt": ReceiverWSGI(handle, health, 256 * 1024)})
    client = app.test_client()
    body = event_body()
    assert client.post("/dt/", data=body, headers=signed(body)).status_code == 202
    assert client.post("/dt/", data=body, headers=signed(body)).status_code == 200
    assert client.post("/dt/", data=b"{}", headers={"Transfer-Encoding": "gzip"}).status_code == 400
    assert client.get("/dt/healthz").get_json() == {"status": "ok"}
    assert h.queue_depth() == 1
