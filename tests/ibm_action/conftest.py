"""An IBM stand-in of our own (a second pouchdb-server), so these tests run whatever
DT_TEST_PLATFORMS selects for the contract suite."""

from __future__ import annotations

import pytest

from core import on
from tests.dt import BASE_ENV
from tests.platforms.ibm import IBMStandIn


@pytest.fixture(scope="session")
def ibm_stand_in():
    stand_in = IBMStandIn()
    stand_in.start()  # skips with the reason when node or pouchdb-server is missing
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def make_ibm(ibm_stand_in):
    made = []

    def make(**env):
        merged = {**BASE_ENV, **{k: v for k, v in env.items() if v is not None}}
        for key, value in env.items():
            if value is None:
                merged.pop(key, None)
        harness = ibm_stand_in.harness(merged)
        made.append(harness)
        return harness

    yield make
    for harness in reversed(made):
        harness.close()


@pytest.fixture
def ibm(make_ibm):
    return make_ibm()


@pytest.fixture
def seen():
    calls = []

    @on("*")
    def record(event):
        calls.append(event)

    return calls
