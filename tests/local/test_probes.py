"""``/healthz`` and ``/metrics`` through the ASGI app: a client that has already hung up
gets nothing computed or sent (issue 26: fire-and-forget probes), one still there gets its
answer."""

from __future__ import annotations

import asyncio

import pytest

from core.config import Settings
from local_receiver.app import LocalApp
from tests.dt import BASE_ENV


@pytest.fixture
def app(tmp_path):
    app = LocalApp(tmp_path / "e.db", Settings.from_env(BASE_ENV), retry_base_s=0.0)
    yield app
    app.stop()


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_a_probe_whose_client_already_hung_up_is_not_answered(app, path):
    """uvicorn reports a client that closed its connection as ``http.disconnect`` on the
    next receive: the app then computes and sends nothing for it."""
    sent: list[dict] = []

    async def run():
        messages = [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "query_string": b""}
        await app.asgi()(scope, receive, send)

    asyncio.run(run())
    assert sent == []


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_a_probe_whose_client_is_still_there_is_answered(app, path):
    sent: list[dict] = []

    async def run():
        answered = asyncio.Event()
        first = True

        async def receive():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body":
                answered.set()

        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "query_string": b""}
        await app.asgi()(scope, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 200
