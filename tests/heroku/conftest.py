"""Fixtures for the Heroku-specific tests: the session's redis-server and a harness."""

from __future__ import annotations

import pytest

from tests.platforms.base import harness_factory
from tests.platforms.heroku import SERVER, HerokuHarness


@pytest.fixture(scope="session")
def redis_url():
    url = SERVER.acquire()  # skips, saying why, when redis-server is unavailable
    yield url
    SERVER.release()


@pytest.fixture
def heroku(redis_url):
    with harness_factory(lambda env: HerokuHarness(redis_url, env)) as make:
        yield make


@pytest.fixture
def h(heroku):
    return heroku()
