"""IBM-specific fixtures: the session's pouchdb-server (shared with the contract suite)
and harnesses on it."""

from __future__ import annotations

import pytest

from tests.platforms.base import harness_factory, running
from tests.platforms.ibm import STAND_IN


@pytest.fixture(scope="session")
def ibm_stand_in():
    with running(STAND_IN) as stand_in:  # skips with the reason when node or pouchdb-server is missing
        yield stand_in


@pytest.fixture
def make_ibm(ibm_stand_in):
    with harness_factory(ibm_stand_in.harness) as make:
        yield make


@pytest.fixture
def ibm(make_ibm):
    return make_ibm()
