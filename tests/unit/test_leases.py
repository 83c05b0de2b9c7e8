"""The lease table written before the KCL starts: the KCL's own schema and leases, conditional writes only."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kcl_relay.kcl.leases import (
    LEASE_OWNER_INDEX,
    MAX_HASH_KEY,
    LeaseTables,
    covers_hash_key_space,
    delete_application_tables,
    lease_item,
    list_shards_at,
    other_workers,
    prepare_leases,
    relayed_shards,
    release_leases,
)

REGION = "us-east-1"
TABLES = LeaseTables.of({"applicationName": "app-1"})
HALF = 2**127


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield boto3.client("dynamodb", region_name=REGION), boto3.client("kinesis", region_name=REGION)


def new_stream(kinesis: Any, shards: int) -> None:
    kinesis.create_stream(StreamName="s", ShardCount=shards)


def leases(dynamodb: Any) -> dict[str, dict[str, Any]]:
    items = dynamodb.scan(TableName=TABLES.leases, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item for item in items}


def shard(shard_id: str, start: int, end: int, **parents: str) -> dict[str, Any]:
    return {
        "ShardId": shard_id,
        "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
        **parents,
    }


class ListedShards:
    """A Kinesis client that returns given shards and remembers the ListShards requests (moto ignores ShardFilter)."""

    def __init__(self, shards: list[dict[str, Any]], page: int = 100) -> None:
        self.shards, self.page, self.requests = shards, page, []

    def list_shards(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        start = int(request.get("NextToken", "0"))
        page = {"Shards": self.shards[start : start + self.page]}
        if start + self.page < len(self.shards):
            page["NextToken"] = str(start + self.page)
        return page


def test_table_names_as_the_kcl_derives_them() -> None:
    assert LeaseTables.of({"applicationName": "a"}) == LeaseTables("a", "a-CoordinatorState", "a-WorkerMetricStats")
    named = LeaseTables.of(
        {
            "applicationName": "a",
            "tableName": "leases",
            "coordinatorStateTableName": "cs",
            "workerMetricsTableName": "wm",
        }
    )
    assert named == LeaseTables("leases", "cs", "wm")


def test_a_fresh_application_gets_the_kcls_tables_and_one_lease_per_shard(aws: Any) -> None:
    dynamodb, kinesis = aws
    new_stream(kinesis, 3)
    prepared = prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    assert (prepared.created, prepared.existing, prepared.skipped) == (3, 0, "")

    table = dynamodb.describe_table(TableName=TABLES.leases)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == LEASE_OWNER_INDEX == "LeaseOwnerToLeaseKeyIndex"
    assert index["KeySchema"] == [
        {"AttributeName": "leaseOwner", "KeyType": "HASH"},
        {"AttributeName": "leaseKey", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    for name, key in ((TABLES.coordinator_state, "key"), (TABLES.worker_metrics, "wid")):
        assert dynamodb.describe_table(TableName=name)["Table"]["KeySchema"] == [
            {"AttributeName": key, "KeyType": "HASH"}
        ]

    written = leases(dynamodb)
    shards = kinesis.list_shards(StreamName="s")["Shards"]
    assert set(written) == {s["ShardId"] for s in shards}
    first = shards[0]
    # Exactly what the KCL's EmptyLeaseTableSynchronizer writes (its leases on the emulator, read back): no owner.
    assert written[first["ShardId"]] == {
        "leaseKey": {"S": first["ShardId"]},
        "leaseCounter": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "checkpoint": {"S": "TRIM_HORIZON"},
        "checkpointSubSequenceNumber": {"N": "0"},
        "startingHashKey": {"S": first["HashKeyRange"]["StartingHashKey"]},
        "endingHashKey": {"S": first["HashKeyRange"]["EndingHashKey"]},
    }


def test_an_existing_lease_table_is_left_to_the_kcl(aws: Any) -> None:
    dynamodb, kinesis = aws
    new_stream(kinesis, 1)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    (key,) = leases(dynamodb)
    dynamodb.update_item(
        TableName=TABLES.leases,
        Key={"leaseKey": {"S": key}},
        UpdateExpression="SET checkpoint = :c, leaseOwner = :o",
        ExpressionAttributeValues={":c": {"S": "49590"}, ":o": {"S": "worker-a"}},
    )
    again = prepare_leases(dynamodb, kinesis, TABLES, "s", "LATEST")
    assert (again.created, again.skipped) == (0, "exists, the KCL takes it from here")
    assert leases(dynamodb)[key]["checkpoint"] == {"S": "49590"}  # a restart never rewrites a checkpoint


def test_two_workers_at_once_write_each_lease_once_and_never_overwrite(aws: Any) -> None:
    """The race: worker B describes the table before A created it; A's leases (one already taken) stay as they are."""
    dynamodb, kinesis = aws
    new_stream(kinesis, 2)
    assert prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON").created == 2
    taken = sorted(leases(dynamodb))[0]
    dynamodb.update_item(
        TableName=TABLES.leases,
        Key={"leaseKey": {"S": taken}},
        UpdateExpression="SET checkpoint = :c, leaseOwner = :o ADD leaseCounter :one",
        ExpressionAttributeValues={":c": {"S": "49590"}, ":o": {"S": "worker-a"}, ":one": {"N": "1"}},
    )
    before = leases(dynamodb)

    class LateDescribe:
        """Worker B's view: the table did not exist when it looked; CreateTable then finds A's."""

        def __init__(self, client: Any) -> None:
            self.client = client
            self.first = True

        def describe_table(self, **request: Any) -> Any:
            if self.first:
                self.first = False
                raise dynamodb.exceptions.ResourceNotFoundException(
                    {"Error": {"Code": "ResourceNotFoundException", "Message": "not yet"}}, "DescribeTable"
                )
            return self.client.describe_table(**request)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    second = prepare_leases(LateDescribe(dynamodb), kinesis, TABLES, "s", "TRIM_HORIZON")
    assert (second.created, second.existing) == (0, 2)
    assert leases(dynamodb) == before


@pytest.mark.parametrize(
    ("position", "timestamp", "shard_filter"),
    [
        ("TRIM_HORIZON", None, {"Type": "AT_TRIM_HORIZON"}),
        ("LATEST", None, {"Type": "AT_LATEST"}),
        (
            "AT_TIMESTAMP",
            datetime(2026, 11, 27, 10, tzinfo=timezone.utc),
            {"Type": "AT_TIMESTAMP", "Timestamp": datetime(2026, 11, 27, 10, tzinfo=timezone.utc)},
        ),
    ],
)
def test_start_positions_as_the_kcl_writes_them(
    aws: Any, position: str, timestamp: datetime | None, shard_filter: dict[str, Any]
) -> None:
    dynamodb, _ = aws
    listed = ListedShards([shard("shardId-000000000000", 0, MAX_HASH_KEY)])
    prepare_leases(dynamodb, listed, TABLES, "s", position, timestamp)
    assert listed.requests == [{"StreamName": "s", "ShardFilter": shard_filter}]
    # The sentinel only: the KCL reads the time of AT_TIMESTAMP from its own configuration.
    assert leases(dynamodb)["shardId-000000000000"]["checkpoint"] == {"S": position}


def test_after_resharding_parents_and_children_get_leases_that_name_their_parents(aws: Any) -> None:
    dynamodb, _ = aws
    listed = ListedShards(
        [
            shard("shardId-000000000000", 0, HALF - 1),
            shard("shardId-000000000001", HALF, MAX_HASH_KEY),
            shard("shardId-000000000002", 0, MAX_HASH_KEY, ParentShardId="shardId-000000000000")
            | {"AdjacentParentShardId": "shardId-000000000001"},
        ],
        page=2,  # and the listing comes in pages
    )
    # Closed parents and their merged child together cover the key space twice: the KCL's check accepts it only
    # when the listing is what AT_TRIM_HORIZON returns (the parents); here, the child alone at AT_LATEST.
    only_child = ListedShards([listed.shards[2]])
    assert prepare_leases(dynamodb, only_child, TABLES, "s", "LATEST").created == 1
    child = leases(dynamodb)["shardId-000000000002"]
    assert set(child["parentShardId"]["SS"]) == {"shardId-000000000000", "shardId-000000000001"}
    assert lease_item(listed.shards[0], "TRIM_HORIZON").get("parentShardId") is None
    assert len(list_shards_at(listed, "s", "TRIM_HORIZON")) == 3
    assert listed.requests[1] == {"NextToken": "2"}


@pytest.mark.parametrize(
    ("ranges", "complete"),
    [
        ([(0, MAX_HASH_KEY)], True),
        ([(HALF, MAX_HASH_KEY), (0, HALF - 1)], True),  # in any order
        ([(0, HALF - 2), (HALF, MAX_HASH_KEY)], False),  # a gap
        ([(0, HALF), (HALF, MAX_HASH_KEY)], False),  # an overlap
        ([(1, MAX_HASH_KEY)], False),
        ([(0, MAX_HASH_KEY - 1)], False),
        ([], False),
    ],
)
def test_hash_key_space_check(ranges: list[tuple[int, int]], complete: bool) -> None:
    shards = [shard(f"shardId-{i:012d}", start, end) for i, (start, end) in enumerate(ranges)]
    assert covers_hash_key_space(shards) is complete


def test_an_incomplete_listing_is_left_to_the_kcl(aws: Any) -> None:
    dynamodb, _ = aws
    listed = ListedShards([shard("shardId-000000000000", 0, HALF)])
    prepared = prepare_leases(dynamodb, listed, TABLES, "s", "TRIM_HORIZON")
    assert prepared.created == 0 and "does not cover the hash key space" in prepared.skipped
    assert leases(dynamodb) == {}  # the KCL then does its own (failing, retried) sync, as it would have anyway


def set_owner(dynamodb: Any, key: str, owner: str, checkpoint_owner: str | None = None) -> None:
    values = {":o": {"S": owner}}
    update = "SET leaseOwner = :o"
    if checkpoint_owner:
        update += ", checkpointOwner = :c"
        values[":c"] = {"S": checkpoint_owner}
    dynamodb.update_item(
        TableName=TABLES.leases,
        Key={"leaseKey": {"S": key}},
        UpdateExpression=update,
        ExpressionAttributeValues=values,
    )


def test_a_graceful_stop_hands_back_exactly_its_own_leases(aws: Any) -> None:
    dynamodb, kinesis = aws
    new_stream(kinesis, 4)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    mine, handing_off, theirs, free = sorted(leases(dynamodb))
    set_owner(dynamodb, mine, "me")
    set_owner(dynamodb, handing_off, "other", checkpoint_owner="me")  # the KCL's graceful handoff, under way
    set_owner(dynamodb, theirs, "other")
    for worker in ("me", "other"):
        dynamodb.put_item(TableName=TABLES.worker_metrics, Item={"wid": {"S": worker}, "lut": {"N": "1"}})

    assert release_leases(dynamodb, TABLES, "me") == 2
    after = leases(dynamodb)
    assert "leaseOwner" not in after[mine] and after[mine]["leaseCounter"] == {"N": "1"}  # as evictLease does
    assert after[handing_off]["leaseOwner"] == {"S": "other"} and "checkpointOwner" not in after[handing_off]
    assert after[theirs]["leaseOwner"] == {"S": "other"} and after[theirs]["leaseCounter"] == {"N": "0"}
    assert "leaseOwner" not in after[free] and after[free]["leaseCounter"] == {"N": "0"}
    workers = dynamodb.scan(TableName=TABLES.worker_metrics)["Items"]
    assert [item["wid"]["S"] for item in workers] == ["other"]  # no longer counted as a live worker
    assert release_leases(dynamodb, TABLES, "me") == 0  # nothing left: idempotent


def test_a_lease_taken_over_meanwhile_is_not_released(aws: Any) -> None:
    dynamodb, kinesis = aws
    new_stream(kinesis, 1)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    (key,) = leases(dynamodb)
    set_owner(dynamodb, key, "me")

    class TakenBetweenScanAndUpdate:
        def __init__(self, client: Any) -> None:
            self.client = client

        def scan(self, **request: Any) -> Any:
            page = self.client.scan(**request)
            set_owner(self.client, key, "other")  # the leader reassigned it after our scan
            return page

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    assert release_leases(TakenBetweenScanAndUpdate(dynamodb), TABLES, "me") == 0
    assert leases(dynamodb)[key]["leaseOwner"] == {"S": "other"}


def set_checkpoint(dynamodb: Any, key: str, checkpoint: str) -> None:
    dynamodb.update_item(
        TableName=TABLES.leases,
        Key={"leaseKey": {"S": key}},
        UpdateExpression="SET checkpoint = :c",
        ExpressionAttributeValues={":c": {"S": checkpoint}},
    )


def test_relayed_shards_are_those_past_their_start_position(aws: Any) -> None:
    dynamodb, kinesis = aws
    assert relayed_shards(dynamodb, TABLES.leases) == [], "no lease table: a fresh application"
    new_stream(kinesis, 4)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    assert relayed_shards(dynamodb, TABLES.leases) == [], "every lease still at its start position"
    keys = sorted(leases(dynamodb))
    set_checkpoint(dynamodb, keys[0], "49650000000000000000000000000000000000000000000000000002")
    set_checkpoint(dynamodb, keys[1], "SHARD_END")
    set_checkpoint(dynamodb, keys[2], "LATEST")
    assert relayed_shards(dynamodb, TABLES.leases) == keys[:2]


def test_reset_deletes_the_applications_tables_and_only_those(aws: Any) -> None:
    dynamodb, kinesis = aws
    new_stream(kinesis, 1)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    other = LeaseTables.of({"applicationName": "app-10"})
    prepare_leases(dynamodb, kinesis, other, "s", "TRIM_HORIZON")
    deleted = delete_application_tables(dynamodb, TABLES)
    assert deleted == [TABLES.leases, TABLES.coordinator_state, TABLES.worker_metrics]
    remaining = set(dynamodb.list_tables()["TableNames"])
    assert remaining == {other.leases, other.coordinator_state, other.worker_metrics}
    assert delete_application_tables(dynamodb, TABLES) == [], "nothing left to delete"
    assert prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON").created == 1, "a fresh start"


def test_other_workers_are_lease_owners_and_fresh_worker_metrics(aws: Any) -> None:
    dynamodb, kinesis = aws
    new_stream(kinesis, 3)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    now = 1_800_000_000.0
    assert other_workers(dynamodb, TABLES, "me", now) == set(), "alone: nobody owns a lease, nobody reports"
    first, second, _free = sorted(leases(dynamodb))
    set_owner(dynamodb, first, "me")
    assert other_workers(dynamodb, TABLES, "me", now) == set()
    set_owner(dynamodb, second, "owner")
    for wid, updated in (("me", now), ("idle", now - 30), ("gone", now - 600), ("millis", (now - 5) * 1000)):
        dynamodb.put_item(TableName=TABLES.worker_metrics, Item={"wid": {"S": wid}, "lut": {"N": str(int(updated))}})
    assert other_workers(dynamodb, TABLES, "me", now) == {"owner", "idle", "millis"}


def test_the_metrics_entry_goes_before_any_lease(aws: Any) -> None:
    """While the leader sees the worker's metrics it counts it alive and may assign the released lease right back."""
    dynamodb, kinesis = aws
    new_stream(kinesis, 1)
    prepare_leases(dynamodb, kinesis, TABLES, "s", "TRIM_HORIZON")
    (key,) = leases(dynamodb)
    set_owner(dynamodb, key, "me")
    dynamodb.put_item(TableName=TABLES.worker_metrics, Item={"wid": {"S": "me"}, "lut": {"N": "1"}})
    calls: list[str] = []

    class Recording:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            if name in ("delete_item", "update_item"):
                calls.append(name)
            return getattr(self.client, name)

    assert release_leases(Recording(dynamodb), TABLES, "me") == 1
    assert calls == ["delete_item", "update_item"]
