"""Fixtures shared by every test. Platforms are discovered from ``tests/platforms/``."""

from __future__ import annotations

import importlib
import os
import pkgutil

import pytest

from core.handlers import registry

from . import platforms as _platforms_pkg
from .dt import BASE_ENV
from .platforms.base import StandIn


def _discover() -> list[StandIn]:
    wanted = {p.strip() for p in os.environ.get("DT_TEST_PLATFORMS", "").split(",") if p.strip()}
    found = []
    for info in sorted(pkgutil.iter_modules(_platforms_pkg.__path__), key=lambda i: i.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{_platforms_pkg.__name__}.{info.name}")
        stand_in = getattr(module, "STAND_IN", None)
        if stand_in is not None and (not wanted or stand_in.name in wanted):
            found.append(stand_in)
    return found


PLATFORMS = _discover()


@pytest.fixture(scope="session", params=PLATFORMS, ids=[p.name for p in PLATFORMS])
def stand_in(request):
    platform: StandIn = request.param
    platform.start()  # may pytest.skip() with the reason its services cannot run here
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def make_platform(stand_in):
    """Factory: a harness with `BASE_ENV` updated by the given env (None removes a key)."""
    made = []

    def make(**env):
        merged = dict(BASE_ENV)
        for key, value in env.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        harness = stand_in.harness(merged)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def platform(make_platform):
    return make_platform()


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test registers its own handlers into the global registry `@on` writes to."""
    registry.clear()
    yield
    registry.clear()
