"""Contract-suite scoping: a direct-delivery platform has no ingest step.

A stand-in with ``direct = True`` (tests/platforms/*_direct.py) feeds the worker through
the cloud's queue as DT itself would; the ingest scenarios (signatures, status codes) do
not apply to it, and its ports are the same classes its http-mode platform already runs
test_ports.py against. The worker scenarios run in full.
"""

from __future__ import annotations

import pytest

_NOT_IN_DIRECT_MODE = {
    "test_ingest": "direct delivery has no ingest step: DT publishes into the queue, nothing answers HTTP",
    "test_ports": "the same store classes as the http-mode platform, which runs these",
}


@pytest.fixture(autouse=True)
def _skip_ingest_scenarios_in_direct_mode(request):
    if "stand_in" not in request.fixturenames:
        return
    if not getattr(request.getfixturevalue("stand_in"), "direct", False):
        return
    reason = _NOT_IN_DIRECT_MODE.get(request.module.__name__.rsplit(".", 1)[-1])
    if reason:
        pytest.skip(reason)
