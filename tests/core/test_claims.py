"""The dedup state machine (in progress, completed, expired), on the real SQLite store."""

from __future__ import annotations

import pytest

from core.claims import Claims, LostClaim, Outcome
from core.keys import store_key
from core.ports import COMPLETED, IN_PROGRESS


@pytest.fixture
def claims(claim_store, clock):
    return Claims(claim_store, clock=clock)


def test_first_claim_wins_and_second_sees_in_flight(claims):
    outcome, held = claims.acquire("e1", lease_s=8)
    assert outcome is Outcome.CLAIMED and held.claim.status == IN_PROGRESS
    assert claims.acquire("e1", lease_s=8) == (Outcome.IN_FLIGHT, None)


def test_completed_claim_is_a_duplicate_until_its_ttl(claims, clock):
    _, held = claims.acquire("e1", lease_s=8)
    assert claims.complete(held, ttl_s=100)
    clock.now += 99
    assert claims.acquire("e1", 8)[0] is Outcome.DUPLICATE
    clock.now += 2
    assert claims.acquire("e1", 8)[0] is Outcome.CLAIMED


def test_expired_in_progress_claim_is_taken_over(claims, clock):
    claims.acquire("e1", lease_s=8)
    clock.now += 9
    outcome, held = claims.acquire("e1", lease_s=8)
    assert outcome is Outcome.CLAIMED


def test_release_only_deletes_our_own_claim(claims, claim_store, clock):
    _, first = claims.acquire("e1", lease_s=8)
    clock.now += 9
    _, second = claims.acquire("e1", lease_s=8)  # the first request's lease ran out
    assert claims.release(first) is False  # must not free the second request's claim
    assert claim_store.get(store_key("e1")).version == second.claim.version
    assert claims.release(second) is True
    assert claim_store.get(store_key("e1")) is None


def test_complete_fails_if_our_claim_was_taken_over(claims, clock):
    _, first = claims.acquire("e1", lease_s=8)
    clock.now += 9
    claims.acquire("e1", lease_s=8)
    assert claims.complete(first, ttl_s=100) is False


def test_progress_survives_an_abandoned_attempt(claims, claim_store):
    _, held = claims.acquire("e1", lease_s=300)
    held = claims.record_progress(held, "mod.a")
    assert claims.abandon(held)
    outcome, again = claims.acquire("e1", lease_s=300)  # immediately, no lease wait
    assert outcome is Outcome.CLAIMED and again.done == ("mod.a",)
    claims.complete(claims.record_progress(again, "mod.b"), ttl_s=100)
    assert claim_store.get(store_key("e1")).done == ("mod.a", "mod.b")
    assert claim_store.get(store_key("e1")).status == COMPLETED


def test_progress_after_losing_the_claim_raises(claims, clock):
    _, held = claims.acquire("e1", lease_s=8)
    clock.now += 9
    claims.acquire("e1", lease_s=8)
    with pytest.raises(LostClaim):
        claims.record_progress(held, "mod.a")


def test_namespaces_do_not_collide(claim_store, clock):
    ingest, worker = Claims(claim_store, clock=clock), Claims(claim_store, "w", clock)
    assert ingest.acquire("e1", 8)[0] is Outcome.CLAIMED
    assert worker.acquire("e1", 8)[0] is Outcome.CLAIMED


def test_store_keys_are_safe_and_distinct():
    ids = ["plain-ID-123", "a/b", "a\\b", "a#b", "a?b", "\x00", "_x", "x" * 129, "h_abc", "w_abc", "é"]
    keys = [store_key(i) for i in ids] + [store_key(i, "w") for i in ids]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert len(key) <= 200 and key.isascii() and not key.startswith("_")
        assert not set(key) & set("/\\#?") and key.isprintable()
    assert store_key("plain-ID-123") == "plain-ID-123"


def test_the_id_null_is_hashed_and_other_words_stay_plain():
    # pouchdb-server (the IBM stand-in) answers 400 to a document whose id is "null".
    assert store_key("null").startswith("h_") and store_key("null") != store_key("h_null")
    assert [store_key(w) for w in ("Null", "nullx", "true", "None")] == ["Null", "nullx", "true", "None"]
