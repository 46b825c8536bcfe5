"""An AWS stand-in (moto) of this module's own, and harnesses on it."""

from __future__ import annotations

import pytest

from tests.dt import BASE_ENV
from tests.platforms.aws import AwsStandIn


@pytest.fixture(scope="module")
def aws():
    stand_in = AwsStandIn()
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def make_harness(aws):
    made = []

    def make(**env):
        merged = {**BASE_ENV, **env}
        harness = aws.harness({k: v for k, v in merged.items() if v is not None})
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def harness(make_harness):
    return make_harness()
