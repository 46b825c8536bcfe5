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


class PlainQueue(SQLiteQueue):
    """The SQLite queue without its `claim_and_enqueue`, i.e. a plain `EventQueue` like
    SQS, Pub/Sub, a Storage Queue or Redis: core's general protocol (claim, enqueue, mark
    completed) is what these tests exercise. The outbox path has tests of its own."""

    claim_and_enqueue = None  # type: ignore[assignment]


@pytest.fixture
def queue(db):
    return PlainQueue(db)


@pytest.fixture
def state_store(db):
    return SQLiteStateStore(db)
