"""Resharding through the real KCL: a split and a merge on kinesis-mock, the lease table on moto.

moto cannot serve this: it ignores ListShards' ShardFilter, and the KCL then rejects the shard hash ranges after a
split ("Hash range of shards returned ... was incomplete"). kinesis-mock implements SplitShard, MergeShards and the
filter; moto (LocalAws) keeps the lease table, reached through the `dynamodb-endpoint` source option.

kinesis-mock 0.6.2 answers ListShards with ShardFilter AT_TRIM_HORIZON with every shard, parents and children,
which the KCL refuses on an empty lease table. So each test has a worker hold leases before the split: a first
once=true run, or a worker that keeps running through split and merge. With leases present the KCL lists shards
without a filter.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.cdc.event import canonical_key
from kcl_relay.localaws.kinesis_mock import KinesisMock, listening_addresses, missing_requirements
from kcl_relay.localaws.server import LocalAws
from kcl_relay.sink.target import parse_target
from tests.support.e2e import (
    app_name,
    cdc_record,
    put_records,
    run_relay,
    source_url,
    start_relay,
    state_dir,
    wait_for,
)
from tests.support.tables import read_items

MISSING_NODE = missing_requirements()
pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(bool(MISSING_NODE), reason=f"needs Node.js and npm for kinesis-mock: {MISSING_NODE}"),
]
T0 = 1_795_000_000_000_000
PARENT = "shardId-000000000000"
# A false alarm of kcl-relay's stop summary after a reshard (reported, to be fixed in the supervisor/processor):
# the KCL's graceful shutdown waits for the finished (SHARD_END) leases the worker still holds; meanwhile the same
# worker takes the open shard's lease back and starts a second processor for it, which overwrites the shard's
# status file and is never asked to shut down. The first processor had flushed and checkpointed, the second had
# nothing staged, yet the summary says "0 of 1 shard processors flushed and checkpointed" and the exit code is 1.


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws() as emulators:
        yield emulators


@pytest.fixture(scope="module")
def mock() -> Iterator[KinesisMock]:
    with KinesisMock() as server:
        yield server


def wait_active(kinesis: Any, stream: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, f"stream {stream} not ACTIVE after {timeout} s"
        time.sleep(0.1)


def new_stream(kinesis: Any) -> str:
    name = f"s-{app_name()}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    wait_active(kinesis, name)
    return name


def split(kinesis: Any, stream: str, shard_id: str) -> list[str]:
    """Split a shard in the middle of its hash range; the two children's ids."""
    (shard,) = [s for s in kinesis.list_shards(StreamName=stream)["Shards"] if s["ShardId"] == shard_id]
    low, high = (int(shard["HashKeyRange"][end]) for end in ("StartingHashKey", "EndingHashKey"))
    kinesis.split_shard(StreamName=stream, ShardToSplit=shard_id, NewStartingHashKey=str((low + high) // 2))
    wait_active(kinesis, stream)
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    return sorted(s["ShardId"] for s in shards if s.get("ParentShardId") == shard_id)


def merge(kinesis: Any, stream: str, left: str, right: str) -> str:
    kinesis.merge_shards(StreamName=stream, ShardToMerge=left, AdjacentShardToMerge=right)
    wait_active(kinesis, stream)
    (merged,) = [s for s in kinesis.list_shards(StreamName=stream)["Shards"] if s.get("AdjacentParentShardId")]
    return str(merged["ShardId"])


def records_in(kinesis: Any, stream: str, shard: str) -> int:
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return len(kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"])


def url(aws: LocalAws, mock: KinesisMock, stream: str, app: str, **more: str) -> str:
    # A fixed worker id: a restarted worker is the same worker to KCL 3's lease assignment. With a fresh id each
    # run, the previous run's WorkerMetricStats still count as a live worker and get leases assigned that then
    # have to expire (about 10 s per lease).
    return source_url(
        mock.endpoint_url, stream, app=app, worker_id=f"{app}-w", dynamodb_endpoint=aws.endpoint_url, **more
    )


def run_once(aws: LocalAws, mock: KinesisMock, stream: str, target: str, app: str) -> subprocess.CompletedProcess[str]:
    return run_relay(url(aws, mock, stream, app, once="true"), target, "t")


def processor_log(stderr: str) -> list[str]:
    return (state_dir(stderr) / "processor.log").read_text().splitlines()


def ids(target: str) -> set[str]:
    return {item["id"] for item in read_items(parse_target(target, "t"), {"id": "S"}).values()}


def checkpoints(aws: LocalAws, app: str) -> dict[str, str]:
    items = aws.client("dynamodb").scan(TableName=app, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item["checkpoint"]["S"] for item in items}


def line_of(lines: list[str], text: str, start: int = 0) -> int:
    """Index of the first processor.log line from `start` on containing `text`."""
    found = next((index for index, line in enumerate(lines) if index >= start and text in line), None)
    assert found is not None, f"{text!r} not in processor.log:\n" + "\n".join(lines[-40:])
    return found


def assert_read_after(lines: list[str], parent: str, children: list[str]) -> None:
    """Each child's processor started only after its parent's reached shard end and checkpointed."""
    ended = line_of(lines, f"shard {parent}: shard end reached and checkpointed")
    for child in children:
        assert line_of(lines, f"shard {child}: ") > ended, f"{child} was read before its parent {parent} ended"


def assert_stopped(code: int, stderr: str) -> None:
    """A clean stop, also when the KCL hands a lease back to this worker during its shutdown (a second processor
    of the same shard): every processor's status counts, and only a real write failure makes exit code 1."""
    assert code == 0, stderr[-3000:]
    assert "processors flushed and checkpointed" in stderr


def test_loopback_only(mock: KinesisMock) -> None:
    assert mock.pid is not None
    addresses = listening_addresses(mock.pid)
    assert {port for _, port in addresses} == {mock.port, mock.tls_port}
    assert {host for host, _ in addresses} == {"127.0.0.1"}


def test_split_and_merge_every_record_applied_parents_before_children(
    aws: LocalAws, mock: KinesisMock, sqlite_url: str
) -> None:
    kinesis = mock.client()
    stream = new_stream(kinesis)
    put_records(kinesis, stream, [cdc_record("INSERT", f"before{i}", T0 + i) for i in range(20)])
    app = app_name()
    first = run_once(aws, mock, stream, sqlite_url, app)
    assert first.returncode == 0, first.stderr[-3000:]
    assert ids(sqlite_url) == {f"before{i}" for i in range(20)}

    children = split(kinesis, stream, PARENT)
    put_records(kinesis, stream, [cdc_record("INSERT", f"split{i}", T0 + 100 + i) for i in range(20)])
    merged = merge(kinesis, stream, *children)
    last = put_records(kinesis, stream, [cdc_record("INSERT", f"merged{i}", T0 + 200 + i) for i in range(10)])[-1]
    counts = {shard: records_in(kinesis, stream, shard) for shard in [PARENT, *children, merged]}
    assert counts[PARENT] == 20 and counts[merged] == 10 and sum(counts[c] for c in children) == 20, counts
    assert all(counts[c] for c in children), f"both children must hold records: {counts}"

    done = run_once(aws, mock, stream, sqlite_url, app)
    assert_stopped(done.returncode, done.stderr)

    expected = {f"{prefix}{i}" for prefix, n in (("before", 20), ("split", 20), ("merged", 10)) for i in range(n)}
    assert ids(sqlite_url) == expected
    lines = processor_log(done.stderr)
    assert_read_after(lines, PARENT, children)
    for child in children:
        assert_read_after(lines, child, [merged])
    assert checkpoints(aws, app) == {PARENT: "SHARD_END", **dict.fromkeys(children, "SHARD_END"), merged: last}


def test_one_key_updated_across_the_lineage_while_the_relay_runs(
    aws: LocalAws, mock: KinesisMock, sqlite_url: str, tmp_path: Path
) -> None:
    """Split and merge under a running worker: one key's versions on parent, child and merged shard; newest wins."""
    kinesis = mock.client()
    stream = new_stream(kinesis)
    version = iter(range(T0, T0 + 1000))
    spec = parse_target(sqlite_url, "t")

    def changes(count: int, stage: str) -> list[dict[str, Any]]:
        return [cdc_record("MODIFY", "k", next(version), v=f"{stage}{n}") for n in range(count)]

    def current() -> dict[str, Any]:
        try:
            return {item["id"]: item.get("v") for item in read_items(spec, {"id": "S"}).values()}
        except Exception:  # the table appears with the first batch; the worker may hold the write lock
            return {}

    # "gone" is inserted on the parent and removed on a child: the tombstone must hold across the lineage too.
    put_records(kinesis, stream, [cdc_record("INSERT", "gone", next(version)), *changes(3, "parent")])
    app = app_name()
    log = tmp_path / "relay.log"
    worker = start_relay(url(aws, mock, stream, app), sqlite_url, "t", log)
    try:
        wait_for(lambda: current().get("k") == "parent2", 240, "the parent shard's records")
        children = split(kinesis, stream, PARENT)
        put_records(kinesis, stream, [*changes(3, "child"), cdc_record("REMOVE", "gone", next(version))])
        merged = merge(kinesis, stream, *children)
        last = put_records(kinesis, stream, changes(2, "merged"))[-1]
        wait_for(lambda: current() == {"k": "merged1"}, 240, "the merged shard's records")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=120)
    stderr = log.read_text()
    assert_stopped(code, stderr)

    assert read_items(spec, {"id": "S"}) == {canonical_key({"id": "k"}): {"id": "k", "v": "merged1"}}
    lines = processor_log(stderr)
    assert_read_after(lines, PARENT, children)
    for child in children:
        assert_read_after(lines, child, [merged])
    assert checkpoints(aws, app) == {PARENT: "SHARD_END", **dict.fromkeys(children, "SHARD_END"), merged: last}
