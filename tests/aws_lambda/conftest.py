"""An AWS stand-in (moto) of this module's own, and harnesses on it."""

from __future__ import annotations

import pytest

from tests.platforms.aws import STAND_IN
from tests.platforms.base import harness_factory, running


@pytest.fixture(scope="module")
def aws():
    with running(STAND_IN) as stand_in:
        yield stand_in


@pytest.fixture
def make_harness(aws):
    with harness_factory(aws.harness) as make:
        yield make


@pytest.fixture
def harness(make_harness):
    return make_harness()
