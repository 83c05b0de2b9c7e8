"""The DynamoDB Streams source on the emulator: the table's stream, its one-line refusals, and what the emulator
mends in moto for the adapter (whole-second times, DescribeStream's CHILD_SHARDS filter, shard rollover)."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kcl_relay.localaws.app import ROLL_PATH
from kcl_relay.localaws.server import LocalAws
from kcl_relay.source import dynamodb_streams
from kcl_relay.source.url import SourceError, parse_source

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as emulators:
        yield emulators


def make_table(aws: LocalAws, view: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    extra: dict[str, Any] = {}
    if view:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )
    return name


def spec_for(aws: LocalAws, table: str) -> Any:
    return parse_source(f"dynamodb+cdc://test:test@{aws.endpoint_url.split('//')[1]}/{table}")


def records(aws: LocalAws, arn: str, shard_id: str) -> tuple[list[dict[str, Any]], bool]:
    """Every record of a shard and whether its reads ended (no NextShardIterator)."""
    streams = aws.client("dynamodbstreams")
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")
    found: list[dict[str, Any]] = []
    position = iterator["ShardIterator"]
    for _ in range(5):
        page = streams.get_records(ShardIterator=position)
        found.extend(page["Records"])
        if "NextShardIterator" not in page:
            return found, True
        position = page["NextShardIterator"]
    return found, False


def test_the_tables_stream_is_found_with_its_shards(aws: LocalAws) -> None:
    table = make_table(aws, "NEW_AND_OLD_IMAGES")
    stream, shards = dynamodb_streams.prepare_stream(spec_for(aws, table))
    assert stream.table == table and f"table/{table}/stream/" in stream.arn
    assert stream.view_type == "NEW_AND_OLD_IMAGES" and len(shards) == 1


@pytest.mark.parametrize(
    ("view", "why"),
    [(None, "has no stream: enable one"), ("KEYS_ONLY", "is KEYS_ONLY"), ("OLD_IMAGE", "is OLD_IMAGE")],
)
def test_a_stream_without_new_images_is_refused_with_one_line(aws: LocalAws, view: str | None, why: str) -> None:
    table = make_table(aws, view)
    with pytest.raises(SourceError, match=why) as refused:
        dynamodb_streams.prepare_stream(spec_for(aws, table))
    assert "\n" not in str(refused.value) and table in str(refused.value)


def test_a_missing_table_is_one_line(aws: LocalAws) -> None:
    with pytest.raises(SourceError, match="not found"):
        dynamodb_streams.prepare_stream(spec_for(aws, "no_such_table"))


def test_times_are_whole_seconds_as_on_aws(aws: LocalAws) -> None:
    table = make_table(aws, "NEW_IMAGE")
    aws.client("dynamodb").put_item(TableName=table, Item={"id": {"S": "a"}})
    stream, shards = dynamodb_streams.prepare_stream(spec_for(aws, table))
    (record,), _ended = records(aws, stream.arn, shards[0]["ShardId"])
    assert record["dynamodb"]["ApproximateCreationDateTime"].microsecond == 0


def test_a_rolled_shard_ends_and_its_child_continues(aws: LocalAws) -> None:
    table = make_table(aws, "NEW_AND_OLD_IMAGES")
    dynamodb = aws.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"id": {"S": "before"}})
    request = urllib.request.Request(f"{aws.endpoint_url}{ROLL_PATH}?table={table}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        child_id = answer.read().decode()
    dynamodb.put_item(TableName=table, Item={"id": {"S": "after"}})
    stream, shards = dynamodb_streams.prepare_stream(spec_for(aws, table))
    parent, child = shards
    assert child["ShardId"] == child_id and child["ParentShardId"] == parent["ShardId"]
    assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
    assert "EndingSequenceNumber" not in child["SequenceNumberRange"]
    parent_records, parent_ended = records(aws, stream.arn, parent["ShardId"])
    child_records, child_ended = records(aws, stream.arn, child_id)
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in parent_records] == ["before"] and parent_ended
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in child_records] == ["after"] and not child_ended
    # The adapter asks for a shard's children with a ShardFilter, which moto alone ignores.
    streams = aws.client("dynamodbstreams")
    filtered = streams.describe_stream(
        StreamArn=stream.arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": parent["ShardId"]}
    )["StreamDescription"]["Shards"]
    assert [shard["ShardId"] for shard in filtered] == [child_id]
    none = streams.describe_stream(StreamArn=stream.arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": child_id})
    assert none["StreamDescription"]["Shards"] == []


def test_status_sees_the_stream_through_kinesis_calls(aws: LocalAws) -> None:
    table = make_table(aws, "NEW_AND_OLD_IMAGES")
    aws.client("dynamodb").put_item(TableName=table, Item={"id": {"S": "a"}})
    stream, (shard,) = dynamodb_streams.prepare_stream(spec_for(aws, table))
    view = dynamodb_streams.KinesisView(spec_for(aws, table), stream.arn)
    start = view.get_shard_iterator(StreamName=stream.arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    first = view.get_records(ShardIterator=start["ShardIterator"], Limit=1)
    assert len(first["Records"]) == 1 and first["MillisBehindLatest"] >= 0
    seqno = first["Records"][0]["dynamodb"]["SequenceNumber"]
    after = view.get_shard_iterator(
        StreamName=stream.arn,
        ShardId=shard["ShardId"],
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        StartingSequenceNumber=seqno,
    )
    tip = view.get_records(ShardIterator=after["ShardIterator"], Limit=1)
    assert tip["Records"] == [] and tip["MillisBehindLatest"] == 0


def test_start_at_a_sequence_number_finds_its_shard(aws: LocalAws) -> None:
    table = make_table(aws, "NEW_IMAGE")
    aws.client("dynamodb").put_item(TableName=table, Item={"id": {"S": "a"}})
    spec = spec_for(aws, table)
    stream, shards = dynamodb_streams.prepare_stream(spec)
    (record,), _ended = records(aws, stream.arn, shards[0]["ShardId"])
    seqno = record["dynamodb"]["SequenceNumber"]
    assert dynamodb_streams.shard_of_sequence_number(spec, stream.arn, shards, seqno) == shards[0]["ShardId"]
    with pytest.raises(SourceError, match="not found in any shard"):
        dynamodb_streams.shard_of_sequence_number(spec, stream.arn, shards, str(int(seqno) + 1000))
