"""Azure-specific fixtures: the session's Azurite (shared with the contract suite) and
harnesses on it."""

from __future__ import annotations

import pytest

from tests.platforms.azure import STAND_IN
from tests.platforms.base import harness_factory, running


@pytest.fixture(scope="session")
def azurite():
    with running(STAND_IN) as stand_in:  # skips with the reason when node or Azurite is missing
        yield stand_in


@pytest.fixture
def make_azure(azurite):
    with harness_factory(azurite.harness) as make:
        yield make


@pytest.fixture
def azure(make_azure):
    return make_azure()

