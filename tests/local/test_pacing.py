"""The worker's pace: `LocalApp.behind` turns on once the worker lags the enqueues by more
than PACE_BACKLOG events and off once it catches up; while on, the ASGI app yields first."""

from __future__ import annotations

import asyncio

from core.asgi import PACE_S, ReceiverASGI
from core.http import Response
from local_receiver.app import PACE_BACKLOG, LocalApp


def test_behind_follows_the_backlog(tmp_path):
    app = LocalApp(tmp_path / "e.db", retry_base_s=0)
    try:
        for i in range(PACE_BACKLOG):
            app.queue.enqueue('{"not": "an event"}', event_id=f"e{i}")
        assert not app.behind()
        app.queue.enqueue('{"not": "an event"}', event_id="one-more")
        assert app.behind()
        app.runner.drain()  # each is dead-lettered at once (not a DT event): settled
        assert not app.behind()
    finally:
        app.stop()


def test_the_asgi_app_yields_before_handling_only_while_behind(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    behind = [False]
    app = ReceiverASGI(lambda r: Response(202, {}), lambda: {}, 1000, offload=False, behind=lambda: behind[0])

    async def post() -> None:
        scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"2")]}
        messages = iter([{"type": "http.request", "body": b"{}", "more_body": False}])

        async def receive():
            return next(messages)

        async def send(message):
            pass

        await app(scope, receive, send)

    asyncio.run(post())
    assert slept == []
    behind[0] = True
    asyncio.run(post())
    assert slept == [PACE_S]
