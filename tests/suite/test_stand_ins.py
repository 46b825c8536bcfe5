"""`tests.platforms.base.running`: a stand-in starts once per session whoever uses it, is
paused between users (so what it sets in the process does not leak into other tests) and
stops at the session's end (`stop_all`)."""

from __future__ import annotations

import pytest

from tests.platforms import base


class Recording(base.StandIn):
    name = "recording"

    def __init__(self, skip: str | None = None):
        self.calls: list[str] = []
        self.skip = skip

    def start(self):
        self.calls.append("start")
        if self.skip:
            pytest.skip(self.skip)

    def stop(self):
        self.calls.append("stop")

    def pause(self):
        self.calls.append("pause")

    def resume(self):
        self.calls.append("resume")

    def harness(self, env):
        raise NotImplementedError


@pytest.fixture
def own_session(monkeypatch):
    """`stop_all` here stops only the stand-ins this test starts, not the session's."""
    monkeypatch.setattr(base, "_STARTED", [])


def test_started_once_paused_between_users_and_stopped_at_the_end(own_session):
    stand_in = Recording()
    with base.running(stand_in):
        with base.running(stand_in):  # a second fixture sharing it
            pass
    with base.running(stand_in):  # a later user: the services are still up
        pass
    assert stand_in.calls == ["start", "pause", "resume", "pause"]
    base.stop_all()
    assert stand_in.calls[-1] == "stop"
    with base.running(stand_in):  # a new session starts it again
        pass
    assert stand_in.calls[-2:] == ["start", "pause"]


def test_a_stand_in_that_cannot_run_skips_every_user_without_retrying(own_session):
    stand_in = Recording(skip="no emulator here")
    for _ in range(2):
        with pytest.raises(pytest.skip.Exception, match="no emulator here"):
            with base.running(stand_in):
                pass
    assert stand_in.calls == ["start"]
    base.stop_all()
    assert stand_in.calls == ["start"]  # nothing started, nothing to stop


def test_every_started_stand_in_is_stopped_even_when_one_fails_to(own_session):
    class Failing(Recording):
        def stop(self):
            super().stop()
            raise RuntimeError("the emulator would not die")

    first, failing = Recording(), Failing()
    for stand_in in (first, failing):
        with base.running(stand_in):
            pass
    with pytest.raises(RuntimeError, match="would not die"):
        base.stop_all()
    assert first.calls[-1] == "stop" and failing.calls[-1] == "stop"
