"""What the DynamoDB and SQS adapters write, and how they report AWS failures."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from core.ports import COMPLETED, IN_PROGRESS, Claim, DeviceState, QueueError, StoreError
from core.retention import Retention

RERUN_WINDOW_S = Retention().rerun_window_s  # the default rule: 14 days of dead letters + 1 day


def raw_item(harness, table: str, key: dict) -> dict:
    return harness.dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]


def test_claim_has_an_integer_ttl_and_the_exact_expiry(harness):
    harness.claim_store.create("k1", Claim(COMPLETED, 1893456000.25, "v1", ("a.b",)))
    item = raw_item(harness, harness.dedup_table, {"eventId": {"S": "k1"}})
    assert item["expiresAt"] == {"N": "1893456001"}  # TTL: whole epoch seconds, rounded up
    assert float(item["expiresAtExact"]["N"]) == 1893456000.25
    assert item["done"] == {"L": [{"S": "a.b"}]}
    assert harness.claim_store.get("k1").expires_at == 1893456000.25


def test_an_unfinished_claim_outlives_its_lease_in_the_ttl(harness):
    # An abandoned worker lease carries the handlers already done: DynamoDB's TTL must
    # not remove it before the queue's redeliveries are over.
    harness.claim_store.create("w_k1", Claim(IN_PROGRESS, 1893456000.25, "v1", ("a.b",)))
    item = raw_item(harness, harness.dedup_table, {"eventId": {"S": "w_k1"}})
    assert int(item["expiresAt"]["N"]) == 1893456001 + int(RERUN_WINDOW_S)
    assert harness.claim_store.get("w_k1").expires_at == 1893456000.25


def test_state_version_is_an_exact_number_and_data_is_json(harness):
    state = DeviceState("dev", "temperature", 1_795_341_600_123_456_789, "e1", "ts", {"t": {"value": 21.5}}, {"a": "b"})
    assert harness.state_store.put_if_newer(state)
    item = raw_item(harness, harness.state_table, {"deviceId": {"S": "dev"}, "eventType": {"S": "temperature"}})
    assert item["version"] == {"N": "1795341600123456789"}
    assert item["data"] == {"S": '{"t":{"value":21.5}}'}
    assert harness.state_store.get_device("dev") == [state]


@pytest.mark.parametrize("part", ["claims", "state", "queue"])
def test_unreachable_service_becomes_store_error_chained_from_botocore(harness, part):
    with harness.broken(part), pytest.raises(StoreError) as info:
        if part == "claims":
            harness.claim_store.get("k")
        elif part == "state":
            harness.state_store.put_if_newer(DeviceState("d", "t", 1, "e", "ts", {}))
        else:
            harness.queue.enqueue("{}", event_id="e")
    assert isinstance(info.value.__cause__, EndpointConnectionError)
    assert isinstance(info.value, QueueError) is (part == "queue")
    assert harness.dedup_table not in str(info.value) and harness.queue_url not in str(info.value)


def test_other_client_errors_are_store_errors_not_false(harness):
    from aws_lambda.dynamodb import DynamoClaimStore

    missing = DynamoClaimStore(harness.dynamodb, "no-such-table")
    with pytest.raises(StoreError, match="ResourceNotFoundException"):
        missing.create("k", Claim(COMPLETED, 1.0, "v"))
