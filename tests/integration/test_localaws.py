"""The local emulators, the workload and the pump: real writes on moto's DynamoDB, read back from moto's Kinesis."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.localaws.cli import local
from kcl_relay.localaws.pump import (
    MotoUpsertInserts,
    PumpClients,
    PumpError,
    StreamPump,
    kds_envelope,
    partition_key,
    typed_key_id,
)
from kcl_relay.localaws.server import LocalAws, aws_client
from kcl_relay.localaws.workload import (
    WorkloadCounts,
    create_stream,
    create_table,
    normalize_sets,
    run_workload,
    scan_items,
)

pytestmark = pytest.mark.timeout(120)

ENVELOPE_FIELDS = {
    "awsRegion",
    "eventID",
    "eventName",
    "userIdentity",
    "recordFormat",
    "tableName",
    "dynamodb",
    "eventSource",
}
IMAGES = {"INSERT": {"NewImage"}, "MODIFY": {"NewImage", "OldImage"}, "REMOVE": {"OldImage"}}


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAws]:
    with LocalAws(log_path=tmp_path_factory.mktemp("localaws") / "moto.log") as emulators:
        yield emulators


@pytest.fixture
def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"table-{suffix}", f"stream-{suffix}"


def read_stream(kinesis: Any, stream: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every record of every shard from TRIM_HORIZON, as (shard id, partition key, envelope), in shard order."""
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                out.append((shard["ShardId"], record["PartitionKey"], json.loads(record["Data"])))
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return out


def by_key(records: list[tuple[str, str, dict[str, Any]]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    keyed: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for shard_id, _, envelope in records:
        keyed.setdefault(typed_key_id(envelope["dynamodb"]["Keys"]), []).append((shard_id, envelope))
    return keyed


def check_against_workload(
    records: list[tuple[str, str, dict[str, Any]]], counts: WorkloadCounts, final: dict[str, dict[str, Any]]
) -> None:
    assert Counter(envelope["eventName"] for _, _, envelope in records) == {
        name: count
        for name, count in (("INSERT", counts.inserts), ("MODIFY", counts.modifies), ("REMOVE", counts.removes))
        if count
    }
    keyed = by_key(records)
    assert keyed.keys() == counts.events.keys()
    for key_id, history in keyed.items():
        assert len({shard_id for shard_id, _ in history}) == 1, "one key, one shard"
        envelopes = [envelope for _, envelope in history]
        assert [e["eventName"] for e in envelopes] == counts.events[key_id], "per-key order"
        micros = [e["dynamodb"]["ApproximateCreationDateTime"] for e in envelopes]
        assert all(a < b for a, b in itertools.pairwise(micros)), "strictly increasing per key"
        for previous, current in itertools.pairwise(envelopes):
            if "OldImage" in current["dynamodb"]:  # each change starts from the image the one before left
                assert normalize_sets(current["dynamodb"]["OldImage"]) == normalize_sets(
                    previous["dynamodb"]["NewImage"]
                )
        last = envelopes[-1]
        if last["eventName"] == "REMOVE":
            assert key_id not in final
        else:
            assert normalize_sets(last["dynamodb"]["NewImage"]) == normalize_sets(final[key_id])
    assert {k for k, names in counts.events.items() if names[-1] != "REMOVE"} == final.keys()


def test_pump_publishes_the_kinesis_data_streams_for_dynamodb_envelope(aws: LocalAws, names: tuple[str, str]) -> None:
    table, stream = names
    ddb, kinesis = aws.client("dynamodb"), aws.client("kinesis")
    create_table(ddb, table)
    create_stream(kinesis, stream, shards=2)
    counts = run_workload(ddb, table, n_writes=300, n_updates=150, n_deletes=60, seed=7, n_keys=200)
    assert counts.removes > 20 and counts.modifies > 100 and counts.inserts > 100

    pump = StreamPump(PumpClients.for_endpoint(aws.endpoint_url), table, stream)
    assert pump.pump_available() == counts.total_events
    assert pump.pump_available() == 0
    records = read_stream(kinesis, stream)
    assert len(records) == counts.total_events
    assert len({shard_id for shard_id, _, _ in records}) == 2

    for _, key, envelope in records:
        assert set(envelope) == ENVELOPE_FIELDS
        assert envelope["awsRegion"] == "us-east-1"
        assert str(uuid.UUID(envelope["eventID"])) == envelope["eventID"]
        assert envelope["userIdentity"] is None  # moto has no TTL deletions
        assert envelope["recordFormat"] == "application/json"
        assert envelope["tableName"] == table
        assert envelope["eventSource"] == "aws:dynamodb"
        change = envelope["dynamodb"]
        assert (
            set(change)
            == {
                "ApproximateCreationDateTime",
                "ApproximateCreationDateTimePrecision",
                "Keys",
                "SizeBytes",
            }
            | IMAGES[envelope["eventName"]]
        )
        assert change["ApproximateCreationDateTimePrecision"] == "MICROSECOND"
        assert isinstance(change["ApproximateCreationDateTime"], int)
        assert abs(change["ApproximateCreationDateTime"] / 1e6 - time.time()) < 600
        assert isinstance(change["SizeBytes"], int) and change["SizeBytes"] > 0
        assert key == partition_key(change["Keys"])
    assert len({envelope["eventID"] for _, _, envelope in records}) == len(records)

    check_against_workload(records, counts, scan_items(ddb, table))


def test_every_attribute_type_reaches_kinesis_and_the_relay_decodes_it(aws: LocalAws, names: tuple[str, str]) -> None:
    table, stream = names
    ddb, kinesis = aws.client("dynamodb"), aws.client("kinesis")
    create_table(ddb, table, (("h", "N"), ("r", "B")))
    create_stream(kinesis, stream, shards=1)
    counts = run_workload(ddb, table, n_writes=60, n_updates=30, n_deletes=10, seed=3, n_keys=30)
    StreamPump(PumpClients.for_endpoint(aws.endpoint_url), table, stream).pump_available()
    records = read_stream(kinesis, stream)
    check_against_workload(records, counts, scan_items(ddb, table))

    types: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for tag, inner in value.items():
                types.add(tag)
                collect(inner)
        elif isinstance(value, list):
            for inner in value:
                collect(inner)

    for _, _, envelope in records:
        collect(envelope["dynamodb"].get("NewImage", {}))
    assert {"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"} <= types

    for number, (shard_id, _, envelope) in enumerate(records):
        data = json.dumps(envelope).encode()
        event = decode(RawRecord(data, Position(shard_id, str(number + 1))))
        assert event.op == envelope["eventName"]
        assert event.version == envelope["dynamodb"]["ApproximateCreationDateTime"]
        assert not event.is_ttl_expiry


def test_follow_picks_up_new_writes_and_state_resumes(aws: LocalAws, names: tuple[str, str]) -> None:
    table, stream = names
    ddb, kinesis = aws.client("dynamodb"), aws.client("kinesis")
    create_table(ddb, table, stream=False)
    create_stream(kinesis, stream, shards=2)
    pump = StreamPump(PumpClients.for_endpoint(aws.endpoint_url), table, stream)
    pump.ensure_stream()  # enables NEW_AND_OLD_IMAGES on a table created without a stream
    assert ddb.describe_table(TableName=table)["Table"]["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"

    stop = threading.Event()
    rounds: list[int] = []
    follower = threading.Thread(target=pump.follow, args=(stop, 0.05), kwargs={"on_put": rounds.append})
    follower.start()
    try:
        counts = run_workload(ddb, table, n_writes=40, n_updates=20, n_deletes=10, seed=11, n_keys=25)
        deadline = time.monotonic() + 20
        while sum(rounds) < counts.total_events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join(10)
    assert not follower.is_alive()
    assert sum(rounds) == counts.total_events
    check_against_workload(read_stream(kinesis, stream), counts, scan_items(ddb, table))

    resumed = StreamPump(PumpClients.for_endpoint(aws.endpoint_url), table, stream, state=pump.state)
    assert resumed.pump_available() == 0  # nothing put twice
    ddb.put_item(TableName=table, Item={"pk": {"S": "after"}, "v": {"N": "1"}})
    assert resumed.pump_available() == 1
    versions = {
        typed_key_id(e["dynamodb"]["Keys"]): e["dynamodb"]["ApproximateCreationDateTime"]
        for *_, e in read_stream(kinesis, stream)
    }
    after = versions.pop(typed_key_id({"pk": {"S": "after"}}))
    assert after > max(versions.values())  # the derived clock carried over too


class FlakyKinesis:
    """PutRecords that fails the first entry of every other request, like throttling on AWS."""

    def __init__(self) -> None:
        self.calls = 0
        self.landed: list[tuple[str, dict[str, Any]]] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        keys = [entry["PartitionKey"] for entry in Records]
        assert len(keys) == len(set(keys)), "at most one record per key in a request"
        results: list[dict[str, Any]] = []
        for index, entry in enumerate(Records):
            if self.calls % 2 and index == 0:
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                self.landed.append((entry["PartitionKey"], json.loads(entry["Data"])))
                results.append({"SequenceNumber": str(len(self.landed)), "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


class FakeMeta:
    region_name = "eu-west-1"


class FakeDynamoDB:
    meta = FakeMeta()


def stream_record(key: str, version: int, event_name: str = "MODIFY") -> dict[str, Any]:
    from datetime import datetime, timezone

    image = {"pk": {"S": key}, "v": {"N": str(version)}}
    return {
        "eventName": event_name,
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2024, 1, 1, tzinfo=timezone.utc),  # coarse: all equal
            "Keys": {"pk": {"S": key}},
            "NewImage": image,
            "SequenceNumber": str(version),
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def test_retries_keep_per_key_order_and_timestamps_strictly_increase() -> None:
    kinesis = FlakyKinesis()
    pump = StreamPump(PumpClients(FakeDynamoDB(), None, kinesis), "t", "s", backoff=0)
    for version in range(30):
        for key in "abc":
            pump._enqueue(stream_record(key, version))
    assert pump._flush() == 90 and pump.pending == 0
    for key in "abc":
        mine = [e for k, e in kinesis.landed if k == partition_key({"pk": {"S": key}})]
        assert [int(e["dynamodb"]["NewImage"]["v"]["N"]) for e in mine] == list(range(30))
        micros = [e["dynamodb"]["ApproximateCreationDateTime"] for e in mine]
        assert all(a < b for a, b in itertools.pairwise(micros))
        assert mine[0]["awsRegion"] == "eu-west-1"


def test_gives_up_after_max_attempts_and_keeps_records_pending() -> None:
    class DownKinesis:
        def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
            return {"FailedRecordCount": len(Records), "Records": [{"ErrorCode": "InternalFailure"} for _ in Records]}

    pump = StreamPump(PumpClients(FakeDynamoDB(), None, DownKinesis()), "t", "s", max_attempts=3, backoff=0)
    pump._enqueue(stream_record("a", 1))
    with pytest.raises(PumpError):
        pump._flush()
    assert pump.pending == 1


def test_moto_upsert_pairs_become_one_insert() -> None:
    def bare(key: str) -> dict[str, Any]:
        record = stream_record(key, 0, "INSERT")
        record["dynamodb"]["NewImage"] = dict(record["dynamodb"]["Keys"])
        return record

    upserts = MotoUpsertInserts()
    assert upserts.feed(bare("a")) == []
    assert upserts.feed(bare("b")) == []
    full = stream_record("a", 1, "INSERT")
    assert upserts.feed(full) == [full]  # moto's key-only INSERT of "a" is dropped
    modify = stream_record("b", 2)
    assert upserts.feed(modify) == [bare("b"), modify]  # a genuine key-only item stays
    assert upserts.feed(bare("c")) == []
    assert upserts.drain() == [bare("c")] and upserts.drain() == []


def test_ttl_deletions_carry_the_service_principal() -> None:
    record = stream_record("a", 1, "REMOVE")
    record["dynamodb"]["OldImage"] = record["dynamodb"].pop("NewImage")
    record["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
    envelope = kds_envelope(record, "t", "us-east-1", 1)
    assert envelope["userIdentity"] == {"principalId": "dynamodb.amazonaws.com", "type": "Service"}
    assert set(envelope["dynamodb"]) == {
        "ApproximateCreationDateTime",
        "ApproximateCreationDateTimePrecision",
        "Keys",
        "OldImage",
        "SizeBytes",
    }
    assert decode(RawRecord(json.dumps(envelope).encode(), Position("s", "1"))).is_ttl_expiry


def test_cli_demo_setup_pump_and_errors(aws: LocalAws, names: tuple[str, str], tmp_path: Path) -> None:
    table, stream = names
    runner = CliRunner()
    endpoint = ["--endpoint", aws.endpoint_url, "--table", table, "--stream", stream]
    result = runner.invoke(local, ["demo-setup", *endpoint, "--writes", "20", "--updates", "5", "--deletes", "3"])
    assert result.exit_code == 0, result.output
    state = tmp_path / "pump.json"
    result = runner.invoke(local, ["pump", *endpoint, "--state-file", str(state)])
    assert result.exit_code == 0, result.output
    put = int(result.output.split()[1])
    assert put == len(read_stream(aws.client("kinesis"), stream)) > 0
    result = runner.invoke(local, ["pump", *endpoint, "--state-file", str(state)])
    assert result.output.startswith("put 0 records")

    result = runner.invoke(local, ["pump", "--endpoint", aws.endpoint_url, "--table", "missing", "--stream", stream])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "ResourceNotFoundException" in result.output


def test_cli_up_detached_and_down(tmp_path: Path) -> None:
    runner = CliRunner()
    pidfile = tmp_path / "aws.pid"
    result = runner.invoke(local, ["up", "--detach", "--port", "0", "--pidfile", str(pidfile)])
    assert result.exit_code == 0, result.output
    endpoint = result.output.strip()
    try:
        assert aws_client("kinesis", endpoint).list_streams()["StreamNames"] == []
        again = runner.invoke(local, ["up", "--detach", "--port", "0", "--pidfile", str(pidfile)])
        assert again.exit_code == 2 and "already running" in again.output
    finally:
        result = runner.invoke(local, ["down", "--pidfile", str(pidfile)])
    assert result.output.strip() == "stopped"
    assert not pidfile.exists()
    assert runner.invoke(local, ["down", "--pidfile", str(pidfile)]).output.strip() == "not running"
