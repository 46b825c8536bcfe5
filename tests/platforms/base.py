"""What every platform gives the shared contract suite.

A `StandIn` starts the platform's offline services once per session (moto, Azurite, the
Google emulators, pouchdb-server, redis-server, or nothing for SQLite) and hands each test
a fresh, isolated `Harness`. The harness drives the platform's *real entry points*
(Lambda handler, Flask app, Azure function, ...) the way the cloud would, and exposes the
platform's port implementations so the suite can also check them directly.

To add a platform: create ``tests/platforms/<name>.py`` with a module-level
``STAND_IN = <YourStandIn>()``. `tests/conftest.py` finds it; every scenario in
``tests/contract/`` then runs against it. ``DT_TEST_PLATFORMS=local,aws`` limits a run.
"""

from __future__ import annotations

import abc
import json
import socket
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

from core.ports import ClaimStore, DeviceState, DeviceStateStore

def free_port() -> int:
    """A loopback port nothing listens on: a server can take it, and connecting to it now
    is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Store or queue parts a harness can break on demand.
PARTS = ("claims", "queue", "state")


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> dict | None:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Harness(abc.ABC):
    """One test's view of a platform, with its own empty tables and queues."""

    #: How many deliveries a failing message gets before it is dead-lettered (tests use
    #: a small number; deployments use `DT_MAX_ATTEMPTS` or the queue's own setting).
    max_attempts: int = 3
    claim_store: ClaimStore
    state_store: DeviceStateStore

    @abc.abstractmethod
    def deliver(
        self, body: bytes, headers: Mapping[str, str] | list[tuple[str, str]], method: str = "POST", path: str = "/"
    ) -> Reply:
        """Send one request to the platform's ingest entry point, as its HTTP front end
        would (API Gateway event, Flask request, func.HttpRequest, OpenWhisk args...)."""

    @abc.abstractmethod
    def drain(self) -> None:
        """Run the platform's worker entry point until the queue is empty, the way the
        platform's trigger would: a message whose processing raised is redelivered (at
        once, in tests) and, after `max_attempts` deliveries, dead-lettered. Returns
        when no message is left to deliver."""

    @abc.abstractmethod
    def inject_message(self, message: str) -> None:
        """Put a raw message on the platform's queue, exactly as ingest would have: used to
        simulate the queue redelivering a message that was already processed."""

    @abc.abstractmethod
    def queue_depth(self) -> int:
        """Messages waiting in the work queue (not counting dead letters)."""

    @abc.abstractmethod
    def dead_letters(self) -> list[str]:
        """Event ids of the messages that were dead-lettered."""

    @abc.abstractmethod
    def broken(self, part: str) -> AbstractContextManager:
        """While inside, `part` (one of `PARTS`) fails the way the platform's SDK fails when
        the service is unreachable, so the adapter's error translation is exercised."""

    @abc.abstractmethod
    def new_container(self) -> None:
        """Forget everything the entry points built and cached, so the next request meets
        a fresh container (a cold start) that builds its configuration again."""

    def metrics(self):
        """The metrics this harness's entry points emitted so far, read back from the
        platform's native form (`tests.metrics_native`): counters summed, histograms as
        observation counts, per (name, dimensions)."""
        raise NotImplementedError

    # -- bounded storage (core.retention); tests/contract/test_retention.py ---------------

    #: True where the store's own TTL removes expired records (DynamoDB, Firestore, Redis):
    #: a test's fake clock cannot fire it (and moto and the Firestore emulator never fire it
    #: at all), so the suite checks `record_expiries` instead of counting records.
    ttl_never_fires: bool = False

    def sweep(self) -> None:
        """Run the platform's own cleanup of expired records once, as its schedule would
        (a no-op where the store's native TTL does it)."""

    def start_cleanup(self):
        """Start the platform's scheduled cleanup exactly as deployed, where it runs in the
        test's process (the local receiver's background thread); returns a function that
        stops it, or None where the schedule is the cloud's (a timer, a cron job: callers
        then run `sweep` on a schedule of their own). Used by the reliability long run."""
        return None

    def stored_records(self) -> dict[str, int]:
        """How many records the store holds: ``events`` (claims, ledger entries, outbox
        documents, dead letters) and ``state`` (device state records)."""
        raise NotImplementedError

    def record_expiries(self) -> list[float]:
        """For `ttl_never_fires` platforms: each stored claim's native-TTL expiry (epoch
        seconds); raises if a record has none or the store's TTL is not enabled."""
        raise NotImplementedError

    def native_expiry(self, key: str) -> float | None:
        """When the store's own TTL removes the record under `key` (epoch seconds, read
        back from what was written: DynamoDB's ``expiresAt``, Firestore's ``expiresAt``,
        Redis's PEXPIRETIME), or None where a sweeper removes records instead (`sweep`).
        A test's fake clock cannot make a native TTL fire, so the suite checks this."""
        return None

    # -- dead letters and restarts; tests/contract/test_retention.py ---------------------

    def requeue_dead_letters(self) -> int:
        """Put every dead letter back on the work queue, as an operator does once the
        handler is fixed (the platform's documented way: ``dtconnector dead-letters
        --requeue``, an SQS redrive, republishing the dead-letter subscription, moving
        the poison queue back...). Returns how many."""
        raise NotImplementedError

    def restart(self) -> None:
        """Stop and start the platform's processes, as a redeploy or a crash would: what
        the entry points cached is forgotten and their start-up recovery runs."""
        self.new_container()

    def device_state(self, device_id: str) -> dict[str, DeviceState]:
        return {s.event_type: s for s in self.state_store.get_device(device_id)}

    def close(self) -> None:
        """Release per-test resources."""


class StandIn(abc.ABC):
    """The platform's offline services for a whole test session. Use it through
    `running()`: it starts on first use and stops at the session's end (`stop_all`),
    however many fixtures share it and however often they come and go."""

    name: str
    #: Tests on stand-ins with the same group run on one pytest-xdist worker, which
    #: starts the services once (None: any worker may start its own; cheap to start).
    xdist_group: str | None = None
    _users: int = 0
    _started: bool = False
    _skip_reason: str | None = None

    @abc.abstractmethod
    def start(self) -> None:
        """Start services; call `pytest.skip("reason")` if they cannot run here."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the services (at the end of the session)."""

    def pause(self) -> None:
        """No test uses the stand-in for now: undo what it changed in this process
        (environment variables, patched SDKs) while its services keep running."""

    def resume(self) -> None:
        """A test uses the stand-in again after a `pause`: redo what `pause` undid."""

    @abc.abstractmethod
    def harness(self, env: Mapping[str, str]) -> Harness:
        """A fresh harness whose entry points see exactly `env` as their `DT_*` settings
        (plus whatever the stand-in itself needs, such as endpoint URLs)."""


@contextmanager
def harness_factory(build: Callable[[Mapping[str, str]], Harness]) -> Iterator[Callable[..., Harness]]:
    """Yields ``make(**env)``: a harness built with `tests.dt.BASE_ENV` updated by `env`
    (a value of None removes that key). Every harness made is closed on exit."""
    from tests.dt import BASE_ENV

    made: list[Harness] = []

    def make(**env: str | None) -> Harness:
        merged = {**BASE_ENV, **env}
        harness = build({k: v for k, v in merged.items() if v is not None})
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in reversed(made):
            harness.close()


#: Stand-ins started in this session, in order: `stop_all` stops them.
_STARTED: list[StandIn] = []


@contextmanager
def running(stand_in: StandIn) -> Iterator[StandIn]:
    """The stand-in, started once per session and ready for as long as the caller uses it.

    The contract suite and a platform's own tests share one instance (each platform
    module's `STAND_IN`). Its services start on first use and keep running until the
    session ends (`stop_all`, from tests/conftest.py): the Google emulators' JVMs alone
    take seconds to start. Between users the stand-in is paused, so the environment it
    sets does not leak into unrelated tests. A stand-in that skipped (its services cannot
    run here) skips again at once, with the same reason, instead of retrying.
    """
    import pytest

    if stand_in._users == 0:
        if stand_in._started:
            stand_in.resume()
        else:
            if stand_in._skip_reason is not None:
                pytest.skip(stand_in._skip_reason)
            try:
                stand_in.start()
            except pytest.skip.Exception as exc:
                stand_in._skip_reason = str(exc.msg)
                raise
            stand_in._started = True
            _STARTED.append(stand_in)
    stand_in._users += 1
    try:
        yield stand_in
    finally:
        stand_in._users -= 1
        if stand_in._users == 0:
            stand_in.pause()


def stop_all() -> None:
    """Stop every stand-in this session started, the last started first."""
    errors = []
    while _STARTED:
        stand_in = _STARTED.pop()
        stand_in._started = False
        try:
            stand_in.stop()
        except Exception as exc:  # the others are still stopped
            errors.append(exc)
    if errors:
        raise errors[0]
