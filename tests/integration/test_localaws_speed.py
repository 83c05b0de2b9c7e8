"""The emulator's faster serialization of DynamoDB items (kcl_relay/localaws/app.py) answers exactly as moto's own."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.serialize import BaseJSONSerializer

from kcl_relay.localaws import app
from kcl_relay.localaws.workload import create_table, fill_table, run_workload

ITEM = {
    "tenant": {"S": "k"},
    "empty": {"S": ""},
    "id": {"N": "-1.5"},
    "blob": {"B": b"\x00\xff"},
    "blobs": {"BS": [b"\x01", b"\x02\x03"]},
    "nothing": {"NULL": True},
    "flag": {"BOOL": False},
    "doc": {"M": {"l": {"L": [{"B": b"x"}, {"M": {}}, {"L": []}, {"SS": ["a"]}, {"NS": ["1", "2.5"]}]}}},
}


def answers(ddb: Any, streams: Any) -> tuple[Any, ...]:
    arn = ddb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    key = {"tenant": ITEM["tenant"], "id": ITEM["id"]}
    return (
        ddb.scan(TableName="t")["Items"],
        ddb.get_item(TableName="t", Key=key)["Item"],
        ddb.batch_get_item(RequestItems={"t": {"Keys": [key]}})["Responses"],
        [record["dynamodb"] for record in records],
    )


def test_items_serialize_as_moto_does(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BaseJSONSerializer._serialize_type_structure is not app.MOTO_STRUCTURE_SERIALIZER  # the fast path is on
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        streams = boto3.client("dynamodbstreams", region_name="us-east-1")
        create_table(ddb, "t", (("tenant", "S"), ("id", "N")))
        ddb.put_item(TableName="t", Item=ITEM)
        fill_table(ddb, "t", 20, seed=3)
        run_workload(ddb, "t", n_writes=20, n_updates=20, n_deletes=10, seed=4, n_keys=20)
        fast = answers(ddb, streams)
        monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_structure", app.MOTO_STRUCTURE_SERIALIZER)
        slow = answers(ddb, streams)
    assert fast == slow
    assert len(fast[0]) > 10 and len(fast[3]) > 50
