"""The KCL's lease table, written before the daemon starts: a fresh application then starts in seconds.

On an empty lease table the KCL 3.1.3 Scheduler waits a random 1-30 s ("Lease table is still empty"), then lists the
shards, writes one lease per shard and sleeps `shardSyncIntervalMillis` before it goes on. When the table already holds
leases it skips all of that. So, only when the lease table does not exist yet, we do what the KCL would do, the same
way (read from its sources: DynamoDBLeaseRefresher, DynamoDBLeaseSerializer, HierarchicalShardSyncer's
EmptyLeaseTableSynchronizer, CoordinatorStateDAO, WorkerMetricStatsDAO):

- the lease table: hash key `leaseKey` (S), PAY_PER_REQUEST, with the GSI `LeaseOwnerToLeaseKeyIndex` (`leaseOwner`
  HASH, `leaseKey` RANGE, KEYS_ONLY) that KCL 3 otherwise adds by UpdateTable and waits for; the application's
  `-CoordinatorState` (`key`) and `-WorkerMetricStats` (`wid`) tables too (on AWS, each one the KCL creates itself
  costs a waiter poll of up to 20 s);
- one lease per shard that ListShards returns with the KCL's own ShardFilter for the start position (AT_TRIM_HORIZON,
  AT_LATEST, AT_TIMESTAMP), open or closed (the KCL finds children through GetRecords at a shard's end): leaseKey =
  shard id, leaseCounter 0, no owner (the KCL's lease assignment hands it out), checkpoint the sentinel TRIM_HORIZON /
  LATEST / AT_TIMESTAMP (the time itself comes from the daemon's initialPositionInStreamExtended), parentShardId (SS)
  from the shard's parents, its hash key range.

Every write is conditional (CreateTable refuses an existing table, a lease is put only if its key is absent), so
several workers starting at once write the same leases once, and a worker that finds the table already there leaves it
to the KCL (restarts, resharding: the KCL's own shard sync manages child leases from then on).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from kcl_relay.source.kinesis import list_shards

LEASE_OWNER_INDEX = "LeaseOwnerToLeaseKeyIndex"
MAX_HASH_KEY = 2**128 - 1
SHARD_FILTER_TYPES = {"TRIM_HORIZON": "AT_TRIM_HORIZON", "LATEST": "AT_LATEST", "AT_TIMESTAMP": "AT_TIMESTAMP"}
ACTIVE_TIMEOUT = 120.0


@dataclass(frozen=True)
class LeaseTables:
    """The DynamoDB tables of one KCL application (names as the KCL derives them unless the properties say)."""

    leases: str
    coordinator_state: str
    worker_metrics: str

    @classmethod
    def of(cls, properties: dict[str, str]) -> LeaseTables:
        application = properties["applicationName"]
        return cls(
            leases=properties.get("tableName") or application,
            coordinator_state=properties.get("coordinatorStateTableName") or f"{application}-CoordinatorState",
            worker_metrics=properties.get("workerMetricsTableName") or f"{application}-WorkerMetricStats",
        )


@dataclass(frozen=True)
class PreparedLeases:
    """What prepare_leases did: `created` leases, or why it left the table to the KCL."""

    created: int = 0
    existing: int = 0
    skipped: str = ""  # a reason when nothing was written

    def describe(self, table: str) -> str:
        if self.skipped:
            return f"lease table {table}: {self.skipped}"
        return f"lease table {table}: wrote {self.created} leases ({self.existing} already there)"


def prepare_leases(
    dynamodb: Any,
    kinesis: Any,
    tables: LeaseTables,
    stream: str,
    position: str,
    timestamp: datetime | None = None,
) -> PreparedLeases:
    """Create the application's tables and the shards' leases when the lease table does not exist yet."""
    if _table_status(dynamodb, tables.leases) is not None:
        return PreparedLeases(skipped="exists, the KCL takes it from here")
    _create_table(dynamodb, tables.leases, "leaseKey", with_owner_index=True)
    _create_table(dynamodb, tables.coordinator_state, "key")
    _create_table(dynamodb, tables.worker_metrics, "wid")
    for table in (tables.leases, tables.coordinator_state, tables.worker_metrics):
        _wait_active(dynamodb, table)
    shards = list_shards_at(kinesis, stream, position, timestamp)
    if not covers_hash_key_space(shards):
        # The KCL retries such a listing and fails its sync; leave the table empty so it does exactly that.
        return PreparedLeases(skipped="the shard listing does not cover the hash key space; left to the KCL")
    created = sum(_put_lease_if_absent(dynamodb, tables.leases, lease_item(shard, position)) for shard in shards)
    return PreparedLeases(created=created, existing=len(shards) - created)


def lease_item(shard: dict[str, Any], position: str) -> dict[str, Any]:
    """A new lease as DynamoDBLeaseSerializer.toDynamoRecord writes it for HierarchicalShardSyncer.newKCLLease."""
    item: dict[str, Any] = {
        "leaseKey": {"S": shard["ShardId"]},
        "leaseCounter": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "checkpoint": {"S": position},
        "checkpointSubSequenceNumber": {"N": "0"},
        "startingHashKey": {"S": shard["HashKeyRange"]["StartingHashKey"]},
        "endingHashKey": {"S": shard["HashKeyRange"]["EndingHashKey"]},
    }
    parents = [shard[key] for key in ("ParentShardId", "AdjacentParentShardId") if shard.get(key)]
    if parents:
        item["parentShardId"] = {"SS": parents}
    return item


def list_shards_at(kinesis: Any, stream: str, position: str, timestamp: datetime | None = None) -> list[dict]:
    """The shards the KCL leases on an empty table: ListShards with the ShardFilter of the start position."""
    shard_filter: dict[str, Any] = {"Type": SHARD_FILTER_TYPES[position]}
    if position == "AT_TIMESTAMP":
        if timestamp is None:
            raise ValueError("AT_TIMESTAMP needs a timestamp")
        shard_filter["Timestamp"] = timestamp
    return list_shards(kinesis, stream, shard_filter)


def covers_hash_key_space(shards: list[dict]) -> bool:
    """HierarchicalShardSyncer.isHashRangeOfShardsComplete: the ranges tile 0..2^128-1, no gap, no overlap."""
    ranges = sorted(
        (int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])) for shard in shards
    )
    if not ranges or ranges[0][0] != 0 or ranges[-1][1] != MAX_HASH_KEY:
        return False
    return all(start == previous_end + 1 for (_, previous_end), (start, _) in itertools.pairwise(ranges))


def _table_status(dynamodb: Any, table: str) -> str | None:
    try:
        return dynamodb.describe_table(TableName=table)["Table"]["TableStatus"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def _create_table(dynamodb: Any, table: str, hash_key: str, with_owner_index: bool = False) -> None:
    """CreateTable as the KCL words it; another worker's table of the same name is fine (ResourceInUseException)."""
    attributes = [{"AttributeName": hash_key, "AttributeType": "S"}]
    request: dict[str, Any] = {
        "TableName": table,
        "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
        "DeletionProtectionEnabled": False,
    }
    if with_owner_index:
        attributes.append({"AttributeName": "leaseOwner", "AttributeType": "S"})
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": LEASE_OWNER_INDEX,
                "KeySchema": [
                    {"AttributeName": "leaseOwner", "KeyType": "HASH"},
                    {"AttributeName": "leaseKey", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ]
    request["AttributeDefinitions"] = attributes
    try:
        dynamodb.create_table(**request)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise


def _wait_active(dynamodb: Any, table: str, timeout: float = ACTIVE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        described = dynamodb.describe_table(TableName=table)["Table"]
        indexes_active = all(index["IndexStatus"] == "ACTIVE" for index in described.get("GlobalSecondaryIndexes", []))
        if described["TableStatus"] == "ACTIVE" and indexes_active:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"DynamoDB table {table} is not ACTIVE after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _put_lease_if_absent(dynamodb: Any, table: str, item: dict[str, Any]) -> bool:
    try:
        dynamodb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(leaseKey)")
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False  # another worker wrote it first: the same lease, or one the KCL already works on
        raise
    return True


def release_leases(dynamodb: Any, tables: LeaseTables, worker_id: str) -> int:
    """After a graceful stop: hand this worker's leases back, as the KCL's evictLease does, and forget its metrics.

    The KCL keeps a stopped worker's leases until they expire (failoverTimeMillis, judged by the leader) and counts
    the worker as alive while its metrics entry is fresh (up to a minute), so a restart under a new worker id would
    wait for both. Released leases go to the next worker the KCL's lease assignment finds. Conditional on the owner:
    a lease another worker took meanwhile is left alone. Returns how many leases were released.
    """
    # The metrics entry first: while the leader sees it, it counts the worker as alive and may hand the released
    # leases straight back to it (the least loaded worker), where they wait failoverTimeMillis to expire.
    try:
        dynamodb.delete_item(TableName=tables.worker_metrics, Key={"wid": {"S": worker_id}})
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    released = 0
    for item in _scan(dynamodb, tables.leases):
        owner = item.get("leaseOwner", {}).get("S")
        checkpoint_owner = item.get("checkpointOwner", {}).get("S")
        if checkpoint_owner == worker_id:  # a graceful handoff to another worker was under way: complete it
            update, condition = "REMOVE checkpointOwner ADD leaseCounter :one", "checkpointOwner = :worker"
        elif owner == worker_id and checkpoint_owner is None:
            update, condition = "REMOVE leaseOwner ADD leaseCounter :one", "leaseOwner = :worker"
            condition += " AND attribute_not_exists(checkpointOwner)"
        else:
            continue
        try:
            dynamodb.update_item(
                TableName=tables.leases,
                Key={"leaseKey": item["leaseKey"]},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues={":worker": {"S": worker_id}, ":one": {"N": "1"}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            continue
        released += 1
    return released


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**request)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# A lease's checkpoint before anything was read: the start position the KCL (or prepare_leases) wrote.
START_SENTINELS = frozenset({"TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"})


def relayed_shards(dynamodb: Any, table: str) -> list[str]:
    """The shards whose lease says records were already relayed: a sequence number checkpoint, or SHARD_END.

    Empty when the lease table does not exist (a fresh application).
    """
    try:
        items = _scan(dynamodb, table)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return []
        raise
    return sorted(
        item["leaseKey"]["S"]
        for item in items
        if item.get("checkpoint", {}).get("S") and item["checkpoint"]["S"] not in START_SENTINELS
    )


def delete_application_tables(dynamodb: Any, tables: LeaseTables, timeout: float = ACTIVE_TIMEOUT) -> list[str]:
    """Start over: delete the application's lease, coordinator state and worker metrics tables, wait until gone.

    Returns the tables that were there. Workers of the application that still run lose their leases with them.
    """
    deleted = []
    for table in (tables.leases, tables.coordinator_state, tables.worker_metrics):
        try:
            dynamodb.delete_table(TableName=table)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                continue
            raise
        deleted.append(table)
    deadline = time.monotonic() + timeout
    for table in deleted:  # a table still DELETING refuses CreateTable of its name
        while _table_status(dynamodb, table) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"DynamoDB table {table} is still there {timeout:.0f} s after DeleteTable")
            time.sleep(0.5)
    return deleted


WORKER_METRICS_FRESH_SECONDS = 120.0  # KCL 3 reports worker metrics every 30 s


def other_workers(dynamodb: Any, tables: LeaseTables, worker_id: str, now: float | None = None) -> set[str]:
    """The application's other workers that may be alive: owners of leases, and fresh worker metrics entries.

    A lease owner may be a worker that died a moment ago; counting it errs on the side of handing leases back.
    """
    now = time.time() if now is None else now
    others = {
        owner
        for item in _scan(dynamodb, tables.leases)
        if (owner := item.get("leaseOwner", {}).get("S")) and owner != worker_id
    }
    try:
        metrics = _scan(dynamodb, tables.worker_metrics)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        metrics = []
    for item in metrics:
        wid = item.get("wid", {}).get("S")
        updated = float(item.get("lut", {}).get("N", "0"))
        updated = updated / 1000 if updated > 1e11 else updated  # epoch seconds (KCL 3.1.3); millis tolerated
        if wid and wid != worker_id and now - updated < WORKER_METRICS_FRESH_SECONDS:
            others.add(wid)
    return others
