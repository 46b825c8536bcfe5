"""Fixtures for the reliability suite. `platform` and `make_platform` (every platform in
tests/platforms/, through its Harness) come from tests/conftest.py."""

from __future__ import annotations

import pytest

from reliability.inproc import Probe

#: Short leases so "wait until the dead request's claim expires" takes 0.2 s, not 8 s.
SHORT_LEASES = {"DT_CLAIM_LEASE_S": "0.2", "DT_WORKER_LEASE_S": "0.2"}
LEASE_WAIT_S = 0.3


@pytest.fixture
def probe() -> Probe:
    """The user's handler: counts completed runs per event id, fails on poison devices."""
    return Probe().install()


@pytest.fixture
def short_lease_platform(make_platform):
    return make_platform(**SHORT_LEASES)
