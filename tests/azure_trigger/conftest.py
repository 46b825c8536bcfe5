"""Azure-specific fixtures: a session Azurite of our own (the contract suite's stand-in
may or may not be running in the same session), and harnesses on it."""

from __future__ import annotations

import pytest

from tests.dt import BASE_ENV
from tests.platforms.azure import AzureStandIn


@pytest.fixture(scope="session")
def azurite():
    stand_in = AzureStandIn()
    stand_in.start()  # skips with the reason when node or Azurite is missing
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def make_azure(azurite):
    made = []

    def make(**env):
        merged = dict(BASE_ENV)
        for key, value in env.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        harness = azurite.harness(merged)
        made.append(harness)
        return harness

    yield make
    for harness in reversed(made):
        harness.close()


@pytest.fixture
def azure(make_azure):
    return make_azure()


@pytest.fixture
def seen():
    """Every event the user's handlers received, in order."""
    from core import on

    calls = []

    @on("*")
    def record(event):
        calls.append(event)

    return calls
