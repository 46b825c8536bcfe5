"""Core's ClaimStore and DeviceStateStore on DynamoDB (low-level client, typed attributes).

Claims table (``DT_DEDUP_TABLE``), partition key ``eventId`` (S), one item per key:
    status (S), version (S), done (L of S),
    expiresAt (N)       epoch seconds rounded up: the table's TTL attribute, so DynamoDB
                        deletes old items eventually (lazily, up to days late). It is
                        `core.retention.Retention.removable_at`: the claim's expiry when
                        COMPLETED, the dead-letter retention plus a day later for an
                        unfinished one (its recorded progress is what a redelivery or a
                        requeued dead letter needs), so the TTL never removes a needed record,
    expiresAtExact (N)  the exact expiry that core compares in code.
Every write is conditional: create needs ``attribute_not_exists(eventId)``, replace and
delete need ``version = :v``. A failed condition answers False.

State table (``DT_STATE_TABLE``), partition key ``deviceId`` (S), sort key ``eventType`` (S):
    version (N)   the event timestamp in integer nanoseconds (DynamoDB numbers keep 38
                  digits, so the comparison is exact), written only if strictly newer,
    eventId (S), timestamp (S), data (S, JSON text), labels (S, JSON text).
`data` is kept as JSON text, not as a DynamoDB map: DynamoDB maps cannot hold floats
without Decimal conversion and refuse numbers outside their range, and a payload that
cannot be stored would fail the worker on every delivery.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

from core.ports import Claim, DeviceState
from core.retention import Retention

from .errors import ConditionFailed, translated

_VERSION = {"#v": "version"}


def _version_is(expected: str) -> dict:
    """The condition of core's compare-and-set: the stored claim's version is `expected`."""
    return {"ConditionExpression": "#v = :v", "ExpressionAttributeNames": _VERSION,
            "ExpressionAttributeValues": {":v": {"S": expected}}}


def _number(value: float) -> str:
    """A float as a plain decimal string that converts back to exactly the same float."""
    return format(Decimal(repr(float(value))), "f")


class DynamoClaimStore:
    def __init__(self, client, table: str, retention: Retention | None = None):
        self._client = client
        self._table = table
        self._retention = Retention.from_env() if retention is None else retention

    def _item(self, key: str, claim: Claim) -> dict:
        return {
            "eventId": {"S": key},
            "status": {"S": claim.status},
            "version": {"S": claim.version},
            "done": {"L": [{"S": name} for name in claim.done]},
            "expiresAt": {"N": str(math.ceil(self._retention.removable_at(claim)))},
            "expiresAtExact": {"N": _number(claim.expires_at)},
        }

    def create(self, key: str, claim: Claim) -> bool:
        try:
            with translated("DynamoDB PutItem (claim create)"):
                self._client.put_item(
                    TableName=self._table,
                    Item=self._item(key, claim),
                    ConditionExpression="attribute_not_exists(eventId)",
                )
        except ConditionFailed:
            return False
        return True

    def get(self, key: str) -> Claim | None:
        with translated("DynamoDB GetItem (claim)"):
            reply = self._client.get_item(TableName=self._table, Key={"eventId": {"S": key}}, ConsistentRead=True)
        item = reply.get("Item")
        if not item:
            return None
        exact = item.get("expiresAtExact") or item["expiresAt"]
        return Claim(
            status=item["status"]["S"],
            expires_at=float(exact["N"]),
            version=item["version"]["S"],
            done=tuple(v["S"] for v in item.get("done", {}).get("L", [])),
        )

    def replace(self, key: str, expected_version: str, claim: Claim) -> bool:
        try:
            with translated("DynamoDB PutItem (claim replace)"):
                self._client.put_item(TableName=self._table, Item=self._item(key, claim),
                                      **_version_is(expected_version))
        except ConditionFailed:
            return False
        return True

    def delete(self, key: str, expected_version: str) -> bool:
        try:
            with translated("DynamoDB DeleteItem (claim)"):
                self._client.delete_item(TableName=self._table, Key={"eventId": {"S": key}},
                                         **_version_is(expected_version))
        except ConditionFailed:
            return False
        return True


class DynamoStateStore:
    def __init__(self, client, table: str):
        self._client = client
        self._table = table

    def put_if_newer(self, state: DeviceState) -> bool:
        item = {
            "deviceId": {"S": state.device_id},
            "eventType": {"S": state.event_type},
            "version": {"N": str(int(state.version))},
            "eventId": {"S": state.event_id},
            "timestamp": {"S": state.timestamp},
            "data": {"S": json.dumps(state.data, separators=(",", ":"))},
            "labels": {"S": json.dumps(state.labels, separators=(",", ":"))},
        }
        try:
            with translated("DynamoDB PutItem (device state)"):
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(deviceId) OR #v < :v",
                    ExpressionAttributeNames=_VERSION,
                    ExpressionAttributeValues={":v": {"N": str(int(state.version))}},
                )
        except ConditionFailed:
            return False
        return True

    def get_device(self, device_id: str) -> list[DeviceState]:
        states = []
        kwargs = dict(
            TableName=self._table,
            KeyConditionExpression="deviceId = :d",
            ExpressionAttributeValues={":d": {"S": device_id}},
            ConsistentRead=True,
        )
        while True:
            with translated("DynamoDB Query (device state)"):
                page = self._client.query(**kwargs)
            states.extend(_state(item) for item in page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return states
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _state(item: dict) -> DeviceState:
    return DeviceState(
        device_id=item["deviceId"]["S"],
        event_type=item["eventType"]["S"],
        version=int(item["version"]["N"]),
        event_id=item["eventId"]["S"],
        timestamp=item["timestamp"]["S"],
        data=json.loads(item["data"]["S"]) if "data" in item else {},
        labels=json.loads(item["labels"]["S"]) if "labels" in item else {},
    )
