import pytest

from local_receiver.sqlite_store import Database, SQLiteClaimStore, SQLiteQueue, SQLiteStateStore


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def db(tmp_path, clock):
    database = Database(tmp_path / "core.db", clock)
    yield database
    database.close()


@pytest.fixture
def claim_store(db):
    return SQLiteClaimStore(db)


@pytest.fixture
def queue(db):
    return SQLiteQueue(db)


@pytest.fixture
def state_store(db):
    return SQLiteStateStore(db)
