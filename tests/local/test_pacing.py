"""The worker's pace: `LocalApp.behind` turns on once the worker lags the enqueues by more
than PACE_BACKLOG events and off once it catches up; while on, `LocalApp.handle` sleeps a moment first."""

from __future__ import annotations

from core.http import Headers
from local_receiver.app import PACE_BACKLOG, PACE_S, LocalApp


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


def test_handle_sleeps_first_only_while_behind(tmp_path, monkeypatch):
    import local_receiver.app as app_module
    from core.http import Request
    from tests.dt import event_body, signed

    slept: list[float] = []
    monkeypatch.setattr(app_module.time, "sleep", slept.append)
    app = LocalApp(tmp_path / "e.db", retry_base_s=0)
    try:
        body = event_body()
        assert app.handle(Request("POST", body, Headers(signed(body)))).status in (202, 401, 503)
        assert slept == []
        app.queue.enqueued += PACE_BACKLOG + 1
        app.handle(Request("POST", body, Headers(signed(body))))
        assert slept == [PACE_S]
    finally:
        app.stop()
