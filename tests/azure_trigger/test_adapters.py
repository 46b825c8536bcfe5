"""The Table Storage and Storage Queue adapters: error translation and stored format."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ServiceRequestError

from core.ports import IN_PROGRESS, Claim, DeviceState, QueueError, StoreError
from tests.platforms.azure import ACCOUNT_KEY


def _claim(version: str) -> Claim:
    return Claim(IN_PROGRESS, time.time() + 60, version)


@pytest.mark.parametrize(
    "part, call",
    [
        ("claims", lambda h: h.claim_store.create("k", _claim("v"))),
        ("claims", lambda h: h.claim_store.get("k")),
        ("claims", lambda h: h.claim_store.replace("k", "v", _claim("w"))),
        ("claims", lambda h: h.claim_store.delete("k", "v")),
        ("state", lambda h: h.state_store.put_if_newer(DeviceState("d", "co2", 1, "e", "t", {}))),
        ("state", lambda h: h.state_store.get_device("d")),
    ],
)
def test_unreachable_table_raises_store_error_from_the_sdk_error(azure, part, call):
    started = time.monotonic()
    with azure.broken(part), pytest.raises(StoreError) as caught:
        call(azure)
    assert isinstance(caught.value.__cause__, ServiceRequestError)
    assert ACCOUNT_KEY not in str(caught.value) and "AccountKey" not in str(caught.value)
    assert time.monotonic() - started < 5  # bounded SDK retries: DT waits only 10 s


def test_unreachable_queue_raises_queue_error(azure):
    queue = azure.module.context().queue
    with azure.broken("queue"), pytest.raises(QueueError) as caught:
        queue.enqueue('{"event": {}}', event_id="e")
    assert isinstance(caught.value.__cause__, ServiceRequestError)
    assert "AccountKey" not in str(caught.value)


def test_broken_is_undone_on_exit(azure):
    with azure.broken("claims"):
        pass
    assert azure.claim_store.create("k-after", _claim("v")) is True


def test_state_version_is_stored_as_a_zero_padded_string_not_a_double(azure):
    version = 1_795_000_000_123_456_789  # not representable as a double
    assert azure.state_store.put_if_newer(DeviceState("dev", "co2", version, "e1", "t", {"co2": {"ppm": 1}}))
    [entity] = azure.state_store.table.query_partition("dev")
    assert entity["version"] == f"{version:020d}"
    assert azure.state_store.put_if_newer(DeviceState("dev", "co2", version + 1, "e2", "t", {})) is True
    assert azure.state_store.put_if_newer(DeviceState("dev", "co2", version, "e3", "t", {})) is False
    [got] = azure.state_store.get_device("dev")
    assert (got.version, got.event_id) == (version + 1, "e2")


def test_large_state_data_round_trips(azure):
    data = {"blob": "x" * 40_000, "text": "Møterom"}  # over the 32K-character (64 KiB UTF-16) string limit
    state = DeviceState("dev-big", "custom", 5, "e", "t", data, {"k": "v"})
    assert azure.state_store.put_if_newer(state)
    assert azure.state_store.get_device("dev-big") == [state]


def test_hostile_device_ids_and_event_types_are_valid_keys(azure):
    state = DeviceState("a/b\\c#d?", "type/with#chars", 7, "e", "t", {})
    assert azure.state_store.put_if_newer(state)
    assert azure.state_store.get_device("a/b\\c#d?") == [state]
