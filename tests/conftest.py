"""Fixtures shared by every test. Platforms are discovered from ``tests/platforms/``."""

from __future__ import annotations

import importlib
import os
import pkgutil

import pytest

from core import on
from core.handlers import registry

from . import platforms as _platforms_pkg
from .platforms.base import StandIn, harness_factory, running, stop_all


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


def pytest_sessionfinish(session):
    """The stand-ins run until every test that could use them is done."""
    stop_all()


@pytest.fixture(scope="session", params=PLATFORMS, ids=[p.name for p in PLATFORMS])
def stand_in(request):
    with running(request.param) as platform:  # skips, saying why, if it cannot run here
        yield platform


@pytest.fixture
def make_platform(stand_in):
    """Factory: a harness with `BASE_ENV` updated by the given env (None removes a key)."""
    with harness_factory(stand_in.harness) as make:
        yield make


@pytest.fixture
def platform(make_platform):
    return make_platform()


#: Every setting `requests` (and so `core.proxies`) reads about proxies and CA bundles.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY",
                   "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def no_proxy_environment(monkeypatch):
    """No proxy or CA-bundle setting in the environment (whatever the machine sets); the
    test sets its own through the returned `monkeypatch`."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def seen():
    """Every event the user's handlers received, in order."""
    calls = []

    @on("*")
    def record(event):
        calls.append(event)

    return calls


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test registers its own handlers into the global registry `@on` writes to."""
    registry.clear()
    yield
    registry.clear()


#: The only scenarios a direct-delivery stand-in (``direct = True``, tests/platforms/*_direct.py)
#: runs: DT publishes into the queue itself, so there is no ingest step to send requests to,
#: and its stores are the http-mode platform's classes, which run every other scenario.
#: The direct-delivery scenarios run on direct stand-ins only.
DIRECT_MODE_MODULES = ("tests.contract.test_worker", "tests.contract.test_direct_delivery")
DIRECT_ONLY_MODULES = ("tests.contract.test_direct_delivery",)


def _applies(item) -> bool:
    callspec = getattr(item, "callspec", None)
    stand_in = callspec.params.get("stand_in") if callspec else None
    if stand_in is None:
        return True
    module = item.module.__name__
    if getattr(stand_in, "direct", False):
        return module in DIRECT_MODE_MODULES
    return module not in DIRECT_ONLY_MODULES


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Scenarios that do not apply to a platform are deselected, not skipped: a direct
    deployment has no ingest endpoint to test, an http one no DT-published messages.

    Under pytest-xdist (`make test`), a scenario on a stand-in whose services are costly
    to start (`StandIn.xdist_group`) joins that group, so one worker starts them."""
    deselected = [item for item in items if not _applies(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if _applies(item)]
    for item in items:
        callspec = getattr(item, "callspec", None)
        group = getattr(callspec.params.get("stand_in") if callspec else None, "xdist_group", None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
