"""Records of a DynamoDB stream, as the DynamoDB Streams Kinesis adapter hands them to the processor.

The adapter (2.0.1, RecordObjectMapper) serializes the SDK's Record as JSON: no tableName, SequenceNumber and
StreamViewType inside `dynamodb`, ApproximateCreationDateTime in epoch milliseconds of a whole second (DynamoDB
Streams rounds it down to the second), an empty OldImage on an INSERT. The sample below is one such record, captured
from the adapter on moto (its sub-second time rounded down as AWS's would be).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kcl_relay.cdc import speedups
from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import Position, RawRecord

SHARD = "shardId-00000001764640000000-f35f62ef"
CHILD = "shardId-00000001764654400000-0c0d0e0f"


def adapter_record(op: str, key: str, seqno: str, millis: int, **image: Any) -> dict[str, Any]:
    change: dict[str, Any] = {
        "ApproximateCreationDateTime": millis,
        "Keys": {"id": {"S": key}},
        "SequenceNumber": seqno,
        "SizeBytes": 248,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if op != "REMOVE":
        change["NewImage"] = {"id": {"S": key}, **image}
    change["OldImage"] = {} if op == "INSERT" else {"id": {"S": key}}
    return {
        "eventID": "ebca4a03327646f6b1ad1673ab8bc3e6",
        "eventName": op,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": change,
    }


def raw(document: dict[str, Any], shard: str = SHARD) -> RawRecord:
    seqno = document["dynamodb"]["SequenceNumber"]
    return RawRecord(json.dumps(document).encode(), Position(shard, seqno), partition_key=seqno)


@pytest.fixture(params=[True, False], ids=["c", "python"])
def both_paths(request: pytest.FixtureRequest) -> Any:
    speedups.use(request.param)
    yield
    speedups.use(True)


def test_an_adapter_record_decodes_into_the_same_change_event(both_paths: None) -> None:
    captured = adapter_record("INSERT", "k0", "1100000000017454423009", 1764640000000, n={"N": "0"}, b={"B": "AAE="})
    event = decode(raw(captured))
    assert (event.op, event.key, event.key_types) == ("INSERT", {"id": "k0"}, {"id": "S"})
    assert event.image == {"id": "k0", "n": 0, "b": "AAE="}  # binary stays base64, as from Kinesis
    assert event.version == 1764640000000 * 1000  # milliseconds, told apart by magnitude: microseconds
    assert event.table_name == ""  # a DynamoDB stream carries one table, and its records do not name it
    removed = decode(raw(adapter_record("REMOVE", "k0", "1100000000017454423010", 1764640000000)))
    assert (removed.op, removed.image) == ("REMOVE", None)


def test_within_one_second_the_later_record_of_a_shard_wins(both_paths: None) -> None:
    same_second = 1764640000000
    first = decode(raw(adapter_record("INSERT", "k", "1100000000017454423009", same_second, n={"N": "1"})))
    second = decode(raw(adapter_record("MODIFY", "k", "1100000000017454423010", same_second, n={"N": "2"})))
    assert first.version == second.version
    (winner,) = coalesce([second, first])
    assert winner.image == {"id": "k", "n": 2}


def test_within_one_second_a_child_shards_record_wins_over_its_parents(both_paths: None) -> None:
    same_second = 1764640000000
    parent = decode(raw(adapter_record("MODIFY", "k", "4000000000000000000099999", same_second, n={"N": "1"})))
    child = decode(raw(adapter_record("MODIFY", "k", "300000000000000000001", same_second, n={"N": "2"}), CHILD))
    assert child.order > parent.order


def test_a_ttl_expiry_is_told_apart_as_from_kinesis(both_paths: None) -> None:
    # The adapter's RecordObjectMapper writes Identity as {"principalId": ..., "type": ...}, as AWS's JSON does.
    expired = adapter_record("REMOVE", "k", "1100000000017454423011", 1764640000000)
    expired["userIdentity"] = {"principalId": "dynamodb.amazonaws.com", "type": "Service"}
    assert decode(raw(expired)).is_ttl_expiry
    assert not decode(raw(adapter_record("REMOVE", "k", "1100000000017454423012", 1764640000000))).is_ttl_expiry
