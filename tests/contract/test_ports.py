"""Each platform's port implementations, checked directly against core's contract."""

from __future__ import annotations

import threading
import time

from core.keys import store_key
from core.ports import COMPLETED, IN_PROGRESS, Claim, DeviceState


def _claim(version, status=IN_PROGRESS, done=()):
    return Claim(status, time.time() + 60, version, tuple(done))


def test_claim_create_is_create_if_absent(platform):
    store = platform.claim_store
    assert store.create("k-create", _claim("v1")) is True
    assert store.create("k-create", _claim("v2")) is False
    got = store.get("k-create")
    assert got.version == "v1" and got.status == IN_PROGRESS
    assert store.get("k-absent") is None


def test_claim_roundtrips_every_field(platform):
    store = platform.claim_store
    claim = Claim(COMPLETED, 1893456000.25, "v1", ("mod.handler_a", "mod.handler_b"))
    assert store.create("k-fields", claim)
    assert store.get("k-fields") == claim


def test_claim_replace_and_delete_require_the_current_version(platform):
    store = platform.claim_store
    store.create("k-cas", _claim("v1"))
    assert store.replace("k-cas", "wrong", _claim("v2")) is False
    assert store.replace("k-cas", "v1", _claim("v2", COMPLETED, ["h"])) is True
    assert store.get("k-cas").done == ("h",)
    assert store.delete("k-cas", "v1") is False
    assert store.delete("k-cas", "v2") is True
    assert store.get("k-cas") is None
    assert store.replace("k-cas", "v2", _claim("v3")) is False
    assert store.delete("k-cas", "v2") is False


def test_concurrent_creates_have_exactly_one_winner(platform):
    store = platform.claim_store
    wins = []
    barrier = threading.Barrier(10)

    def attempt(i):
        barrier.wait()
        if store.create("k-race", _claim(f"v{i}")):
            wins.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert platform.claim_store.get("k-race").version == f"v{wins[0]}"


def test_keys_from_hostile_event_ids_are_valid_and_distinct(platform):
    ids = ["a/b", "a\\b", "a#b", "a?b", "\x00\x01", "_leading", "..", "__x__", "é" * 50, "x" * 5000, "normal-id"]
    store = platform.claim_store
    for i, event_id in enumerate(ids):
        assert store.create(store_key(event_id), _claim(f"v{i}")), event_id
    for i, event_id in enumerate(ids):
        assert store.get(store_key(event_id)).version == f"v{i}"


def _state(version, event_id="e", device="dev", event_type="temperature"):
    return DeviceState(device, event_type, version, event_id, f"ts{version}", {"v": version}, {"name": "x"})


def test_state_put_if_newer_is_strict(platform):
    store = platform.state_store
    assert store.put_if_newer(_state(1_700_000_000_000_000_001, "e1")) is True
    assert store.put_if_newer(_state(1_700_000_000_000_000_000, "e0")) is False
    assert store.put_if_newer(_state(1_700_000_000_000_000_001, "e1-again")) is False
    assert store.put_if_newer(_state(1_700_000_000_000_000_002, "e2")) is True
    [got] = store.get_device("dev")
    assert got == _state(1_700_000_000_000_000_002, "e2")


def test_state_put_if_newer_is_atomic_under_concurrency(platform):
    store = platform.state_store
    versions = list(range(1_700_000_000_000_000_000, 1_700_000_000_000_000_000 + 40))
    barrier = threading.Barrier(8)

    def writer(chunk):
        barrier.wait()
        for v in chunk:
            store.put_if_newer(_state(v, f"e{v}", device="race"))

    threads = [threading.Thread(target=writer, args=(versions[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [got] = store.get_device("race")
    assert got.version == versions[-1]
