"""Fixtures for the Heroku-specific tests: the session's redis-server and a harness."""

from __future__ import annotations

import pytest

from tests.dt import BASE_ENV
from tests.platforms.heroku import SERVER, HerokuHarness


@pytest.fixture(scope="session")
def redis_url():
    url = SERVER.acquire()  # skips, saying why, when redis-server is unavailable
    yield url
    SERVER.release()


@pytest.fixture
def heroku(redis_url):
    made = []

    def make(**env):
        merged = {**BASE_ENV, **{k: v for k, v in env.items() if v is not None}}
        for key, value in env.items():
            if value is None:
                merged.pop(key, None)
        harness = HerokuHarness(redis_url, merged)
        made.append(harness)
        return harness

    yield make
    for harness in reversed(made):
        harness.close()


@pytest.fixture
def h(heroku):
    return heroku()
