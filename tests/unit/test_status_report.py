"""`kcl-relay status`: merging shards with leases, the position after a checkpoint, lag in words, the output."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kcl_relay.kcl.leases import LeaseTables, prepare_leases
from kcl_relay.kcl.report import (
    Heading,
    LeaseTableMissing,
    ShardReport,
    collect,
    format_millis,
    iterator_request,
    merge,
    render_json,
    render_text,
    summary,
)

SEQ = "49650000000000000000000000000000000000000000000000000002"


def shard(shard_id: str, closed: bool = False, parent: str | None = None) -> dict[str, Any]:
    numbers = {"StartingSequenceNumber": "1", **({"EndingSequenceNumber": "9"} if closed else {})}
    listed = {"ShardId": shard_id, "SequenceNumberRange": numbers, "HashKeyRange": {}}
    return {**listed, "ParentShardId": parent} if parent else listed


def lease(checkpoint: str, owner: str | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"leaseKey": {"S": "?"}, "checkpoint": {"S": checkpoint}, "leaseCounter": {"N": "7"}}
    if owner:
        item["leaseOwner"] = {"S": owner}
    return {**item, **extra}


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (0, "0 ms"),
        (999, "999 ms"),
        (1234, "1.2 s"),
        (59_949, "59.9 s"),
        (75_000, "1 min 15 s"),
        (7_500_000, "2 h 5 min"),
    ],
)
def test_format_millis(millis: int, text: str) -> None:
    assert format_millis(millis) == text


def test_merge_joins_shards_and_leases_by_shard_id() -> None:
    shards = [shard("shardId-1"), shard("shardId-0", closed=True), shard("shardId-2", parent="shardId-0")]
    leases = {
        "shardId-0": lease("SHARD_END", "w1"),
        "shardId-1": lease(SEQ, "w2", checkpointOwner={"S": "w3"}),
        "shardId-9": lease("TRIM_HORIZON", parentShardId={"SS": ["shardId-8"]}),  # no longer listed (expired)
    }
    reports = {report.shard_id: report for report in merge(shards, leases)}
    assert list(reports) == ["shardId-0", "shardId-1", "shardId-2", "shardId-9"]  # sorted
    zero, one, two, nine = reports.values()
    assert (zero.closed, zero.finished, zero.owner, zero.caught_up, zero.lag()) == (True, True, "w1", True, "finished")
    assert (one.checkpoint, one.owner, one.handoff_to, one.lease_counter, one.closed) == (SEQ, "w2", "w3", 7, False)
    assert (two.leased, two.owner, two.checkpoint, two.parents) == (False, None, None, ("shardId-0",))
    assert (nine.listed, nine.parents, nine.owner) == (False, ("shardId-8",), None)


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        (SEQ, {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": SEQ}),
        ("TRIM_HORIZON", {"ShardIteratorType": "TRIM_HORIZON"}),
        ("LATEST", {"ShardIteratorType": "LATEST"}),
        ("AT_TIMESTAMP", {"ShardIteratorType": "TRIM_HORIZON"}),  # no time known: from the start, never too little
        (None, {"ShardIteratorType": "TRIM_HORIZON"}),  # no lease yet: the shard will be read from its start
    ],
)
def test_iterator_after_the_checkpoint(checkpoint: str | None, expected: dict[str, str]) -> None:
    request = iterator_request("s", ShardReport("shardId-0", checkpoint=checkpoint))
    assert request == {"StreamName": "s", "ShardId": "shardId-0", **expected}


def test_iterator_at_the_start_time_when_known() -> None:
    when = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    request = iterator_request("s", ShardReport("shardId-0", checkpoint="AT_TIMESTAMP"), when)
    assert (request["ShardIteratorType"], request["Timestamp"]) == ("AT_TIMESTAMP", when)


@pytest.mark.parametrize(
    ("report", "lag", "caught_up"),
    [
        (ShardReport("s", millis_behind=0), "caught up", True),
        (ShardReport("s", millis_behind=0, records_waiting=True), "records waiting, less than 1 s behind", False),
        (ShardReport("s", millis_behind=90_000, records_waiting=True), "1 min 30 s behind", False),
        (ShardReport("s", closed=True, read_to_end=True), "read to its end, SHARD_END not yet checkpointed", True),
        (ShardReport("s", lag_error="ExpiredIteratorException"), "unknown (ExpiredIteratorException)", False),
        (ShardReport("s"), "unknown", False),
        (ShardReport("s", checkpoint="SHARD_END", millis_behind=5), "finished", True),
    ],
)
def test_lag_in_words(report: ShardReport, lag: str, caught_up: bool) -> None:
    assert (report.lag(), report.caught_up) == (lag, caught_up)


def test_summary_names_the_worst_lag() -> None:
    reports = [
        ShardReport("a", leased=True, owner="w1", millis_behind=0),
        ShardReport("b", leased=True, owner="w1", millis_behind=4000, records_waiting=True),
        ShardReport("c", closed=True, leased=True, checkpoint="SHARD_END"),
    ]
    assert summary(reports) == "3 shards (2 open), 3 leases, 1 workers holding leases; 1 not caught up, the most 4.0 s"
    assert summary(reports[:1]).endswith("every shard caught up")


def test_text_names_the_lease_table_first_then_one_row_per_shard() -> None:
    heading = Heading("app-1", "app-1", "orders-cdc", "http://127.0.0.1:4566")
    reports = [
        ShardReport("shardId-000000000000", leased=True, owner="host-a", checkpoint=SEQ, millis_behind=0),
        ShardReport("shardId-000000000001", leased=True, checkpoint="TRIM_HORIZON", millis_behind=2500),
        ShardReport("shardId-000000000002", leased=False, millis_behind=0),
    ]
    lines = render_text(heading, reports).splitlines()
    assert lines[0] == "lease table app-1 (application app-1), stream orders-cdc at http://127.0.0.1:4566"
    assert lines[3].split() == ["SHARD", "OWNER", "CHECKPOINT", "CLOSED", "FINISHED", "LAG"]
    assert lines[4].split() == ["shardId-000000000000", "host-a", SEQ, "no", "no", "caught", "up"]
    assert lines[5].split() == ["shardId-000000000001", "(waiting)", "TRIM_HORIZON", "no", "no", "2.5", "s", "behind"]
    assert lines[6].split()[:3] == ["shardId-000000000002", "(no", "lease)"]
    assert lines[4].index(SEQ) == lines[5].index("TRIM_HORIZON")  # columns line up


def test_json_for_machines() -> None:
    heading = Heading("app-1", "app-1", "s", "AWS eu-central-1")
    report = ShardReport("shardId-0", leased=True, owner="w", checkpoint=SEQ, millis_behind=0)
    document = json.loads(render_json(heading, [report]))
    assert (document["lease_table"], document["stream"], document["caught_up"]) == ("app-1", "s", True)
    (entry,) = document["shards"]
    assert entry["owner"] == "w" and entry["checkpoint"] == SEQ and entry["millis_behind_latest"] == 0
    assert (entry["closed"], entry["finished"], entry["lag"]) == (False, False, "caught up")


# ---- collect, on moto in process -----------------------------------------------------------------------------------


@pytest.fixture
def clients() -> Any:
    with mock_aws():
        session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
        yield session.client("kinesis"), session.client("dynamodb")


def test_collect_reads_leases_and_measures_lag_after_each_checkpoint(clients: Any) -> None:
    kinesis, dynamodb = clients
    kinesis.create_stream(StreamName="s", ShardCount=2)
    tables = LeaseTables.of({"applicationName": "app-1"})
    assert prepare_leases(dynamodb, kinesis, tables, "s", "TRIM_HORIZON").created == 2
    shard_ids = [s["ShardId"] for s in kinesis.list_shards(StreamName="s")["Shards"]]
    numbers = []
    for n in range(3):
        hash_key = "0" if n < 2 else str(2**127 + 1)  # two records on the first shard, one on the second
        put = kinesis.put_record(StreamName="s", Data=b"x", PartitionKey="k", ExplicitHashKey=hash_key)
        numbers.append(put["SequenceNumber"])
        time.sleep(0.02)  # moto's MillisBehindLatest: time between the record read and the newest one
    # the first shard checkpointed at its first record by worker w1; the second shard read to its end
    dynamodb.update_item(
        TableName="app-1",
        Key={"leaseKey": {"S": shard_ids[0]}},
        UpdateExpression="SET checkpoint = :c, leaseOwner = :o",
        ExpressionAttributeValues={":c": {"S": numbers[0]}, ":o": {"S": "w1"}},
    )
    dynamodb.update_item(
        TableName="app-1",
        Key={"leaseKey": {"S": shard_ids[1]}},
        UpdateExpression="SET checkpoint = :c",
        ExpressionAttributeValues={":c": {"S": numbers[2]}},
    )
    first, second = collect(kinesis, dynamodb, "s", "app-1")
    assert (first.shard_id, first.owner, first.checkpoint) == (shard_ids[0], "w1", numbers[0])
    assert first.records_waiting and not first.caught_up  # its second record is not checkpointed yet
    assert (second.owner, second.checkpoint, second.millis_behind, second.caught_up) == (None, numbers[2], 0, True)


def test_collect_without_lease_table(clients: Any) -> None:
    kinesis, dynamodb = clients
    kinesis.create_stream(StreamName="s", ShardCount=1)
    with pytest.raises(LeaseTableMissing):
        collect(kinesis, dynamodb, "s", "never-ran")


def test_collect_after_resharding(clients: Any) -> None:
    """A split: the parent is closed (not finished before SHARD_END), the children are listed before their leases."""
    kinesis, dynamodb = clients
    kinesis.create_stream(StreamName="s", ShardCount=1)
    prepare_leases(dynamodb, kinesis, LeaseTables.of({"applicationName": "app-2"}), "s", "TRIM_HORIZON")
    kinesis.put_record(StreamName="s", Data=b"x", PartitionKey="k")
    kinesis.update_shard_count(StreamName="s", TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    parent, *children = collect(kinesis, dynamodb, "s", "app-2")
    assert (parent.closed, parent.finished, parent.leased, parent.checkpoint) == (True, False, True, "TRIM_HORIZON")
    assert parent.records_waiting and not parent.caught_up  # its record is not applied yet
    assert len(children) == 2
    assert all(child.parents == (parent.shard_id,) and not child.leased and not child.closed for child in children)
    assert [child.lag() for child in children] == ["caught up", "caught up"]  # nothing written to them yet
