import pytest

from core import on


@pytest.fixture
def seen():
    """Every event the user's handlers received, in order."""
    calls = []

    @on("*")
    def record(event):
        calls.append(event)

    return calls
