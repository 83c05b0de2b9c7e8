"""Each source option's effect, shown on the emulators through the real KCL MultiLangDaemon and our processor."""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.kcl.properties import read_properties
from kcl_relay.localaws.server import LocalAws
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.target import parse_target
from tests.support.e2e import (
    app_name,
    cdc_record,
    ids_in,
    new_stream,
    put_records,
    run_relay,
    source_url,
    start_relay,
    state_dir,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)
T0 = 1_795_000_000_000_000  # microseconds: the versions of the crafted records


def count(target_url: str, relation: str) -> int:
    _, rows = run_sql(parse_target(target_url, "unused"), f'SELECT count(*) FROM "{relation}"')
    return int(rows[0][0])


def test_create_and_create_shards(aws: LocalAws, sqlite_url: str) -> None:
    stream = f"s-{app_name()}"
    missing = run_relay(source_url(aws.endpoint_url, stream, once="true"), sqlite_url, "t")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"kcl-relay: error: Kinesis stream '{stream}' not found at {aws.endpoint_url} (region us-east-1); "
        "add ?create=true to create it"
    ]
    done = run_relay(
        source_url(aws.endpoint_url, stream, once="true", create="true", create_shards="3"), sqlite_url, "t"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = aws.client("kinesis").describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert (summary["StreamStatus"], summary["OpenShardCount"]) == ("ACTIVE", 3)


def test_seqno_at_and_after_start_exactly_there(aws: LocalAws, sqlite_url: str) -> None:
    stream = new_stream(aws)
    records = [cdc_record("INSERT", f"k{i}", T0 + i, n=str(i)) for i in range(10)]
    numbers = put_records(aws.client("kinesis"), stream, records)

    app = app_name()
    at = run_relay(
        source_url(
            aws.endpoint_url, stream, once="true", start="seqno-at", seqno=numbers[5], app=app, worker_id="worker-a"
        ),
        sqlite_url,
        "at",
    )
    assert at.returncode == 0, at.stderr[-2000:]
    assert ids_in(sqlite_url, "at") == {f"k{i}" for i in range(5, 10)}
    log = (state_dir(at.stderr) / "processor.log").read_text()
    assert f"no checkpoint, starting seqno-at {numbers[5]}" in log
    # app names the KCL application, i.e. its lease table; worker-id the owner of the leases.
    leases = aws.client("dynamodb").scan(TableName=app)["Items"]
    assert {lease["leaseKey"]["S"] for lease in leases} == {"shardId-000000000000"}
    assert {lease.get("leaseOwner", {}).get("S") for lease in leases} <= {"worker-a", None}

    after = run_relay(
        source_url(aws.endpoint_url, stream, once="true", start="seqno-after", seqno=numbers[5]), sqlite_url, "after"
    )
    assert after.returncode == 0, after.stderr[-2000:]
    assert ids_in(sqlite_url, "after") == {f"k{i}" for i in range(6, 10)}

    # A start position applies only where the application has no checkpoint yet.
    again = run_relay(
        source_url(aws.endpoint_url, stream, once="true", start="seqno-at", seqno=numbers[0], app=app), sqlite_url, "at"
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after checkpoint" in (state_dir(again.stderr) / "processor.log").read_text()
    assert ids_in(sqlite_url, "at") == {f"k{i}" for i in range(5, 10)}


def test_unknown_sequence_number_stops_before_anything_starts(aws: LocalAws, sqlite_url: str) -> None:
    stream = new_stream(aws)
    put_records(aws.client("kinesis"), stream, [cdc_record("INSERT", "k", T0)])
    done = run_relay(source_url(aws.endpoint_url, stream, start="seqno-at", seqno="999999999"), sqlite_url, "t")
    assert done.returncode == 2
    assert "sequence number 999999999 not found" in done.stderr
    assert "logs in" not in done.stderr  # no worker was started


def arrivals(kinesis: Any, stream: str) -> list[float]:
    """Every record's ApproximateArrivalTimestamp (epoch seconds), in stream order (the stream has one shard)."""
    (shard,) = kinesis.list_shards(StreamName=stream)["Shards"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records = kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=10000)["Records"]
    return [record["ApproximateArrivalTimestamp"].timestamp() for record in records]


def test_at_timestamp_batch_size_and_idle_sleep(aws: LocalAws, sqlite_url: str) -> None:
    stream = new_stream(aws)
    kinesis = aws.client("kinesis")
    put_records(kinesis, stream, [cdc_record("INSERT", f"early{i}", T0 + i) for i in range(5)])
    # The KCL takes the timestamp in whole seconds: start in the second after the early records' last arrival.
    early = max(arrivals(kinesis, stream))
    wait_for(lambda: time.time() >= int(early) + 1, 10, "the second after the early records", interval=0.05)
    start = datetime.now(timezone.utc)
    put_records(kinesis, stream, [cdc_record("INSERT", f"late{i}", T0 + 100 + i) for i in range(10)])
    assert min(arrivals(kinesis, stream)[5:]) >= int(start.timestamp()), "the late records arrived after the start"

    url = source_url(
        aws.endpoint_url,
        stream,
        once="true",
        start="at-timestamp",
        timestamp=start.isoformat().replace("+00:00", "Z"),
        batch_size="3",
    )
    done = run_relay(url, sqlite_url, "t", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ids_in(sqlite_url, "t") == {f"late{i}" for i in range(10)}
    folder = state_dir(done.stderr)
    props = read_properties(folder / "kcl.properties")
    # AT_TIMESTAMP is set by the extended key alone (the KCL refuses it as initialPositionInStream).
    assert "initialPositionInStream" not in props
    assert props["initialPositionInStreamExtended"] == str(int(start.timestamp()))
    # batch-size is the database batch only: GetRecords still reads up to 5,000 (the pipeline's unit tests show
    # a delivery cut into batches of at most batch-size); idle-sleep 0.2 is the KCL's floor, no extra pause.
    assert props["maxRecords"] == "5000"
    assert props["idleTimeBetweenReadsInMillis"] == "200"
    assert "millisBehindLatestThresholdForReducedTps" not in props
    flushed = [int(n) for n in re.findall(r": (\d+) records ->", (folder / "processor.log").read_text())]
    assert flushed and sum(flushed) == 10


def test_latest_reads_only_what_comes_after_start_and_sigterm_stops_gracefully(
    aws: LocalAws, sqlite_url: str, tmp_path: Path
) -> None:
    stream = new_stream(aws)
    kinesis = aws.client("kinesis")
    put_records(kinesis, stream, [cdc_record("INSERT", "before", T0)])
    log = tmp_path / "relay.log"
    worker = start_relay(source_url(aws.endpoint_url, stream, start="latest", buffer_time="0.2"), sqlite_url, "t", log)
    try:
        folder = wait_for(lambda: re.search(r"logs in (\S+)", log.read_text()), 60, "the worker to start")
        shards = Path(folder.group(1)) / "shards"
        wait_for(lambda: list(shards.glob("*.json")), 180, "a shard lease")
        time.sleep(2)  # the processor's first read happens right after initialize: LATEST is then fixed
        put_records(kinesis, stream, [cdc_record("INSERT", "after", T0 + 1)])
        wait_for(lambda: count_or_zero(sqlite_url, "t") == 1, 60, "the new record")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    assert code == 0, log.read_text()[-2000:]
    assert ids_in(sqlite_url, "t") == {"after"}
    text = log.read_text()
    assert re.search(r"stopped \(SIGTERM\): processors flushed and checkpointed \([1-9]\d* at shutdown\)", text)
    processor_log = (Path(folder.group(1)) / "processor.log").read_text()
    assert "shutdown requested, flushed and checkpointed" in processor_log


def count_or_zero(target_url: str, table: str) -> int:
    try:
        return count(target_url, table)
    except Exception:  # the table appears with the first record
        return 0


def test_other_tables_are_dead_lettered_or_routed(aws: LocalAws, sqlite_url: str) -> None:
    stream = new_stream(aws)
    records = [cdc_record("INSERT", f"u{i}", T0 + i, table="users") for i in range(4)]
    records += [cdc_record("INSERT", f"o{i}", T0 + 10 + i, table="orders.v2") for i in range(3)]
    put_records(aws.client("kinesis"), stream, records)

    single = run_relay(source_url(aws.endpoint_url, stream, once="true", source_table="users"), sqlite_url, "mixed")
    assert single.returncode == 0, single.stderr[-2000:]
    assert ids_in(sqlite_url, "mixed") == {"u0", "u1", "u2", "u3"}
    _, letters = run_sql(parse_target(sqlite_url, "mixed"), 'SELECT reason FROM "mixed__deadletters"')
    assert len(letters) == 3 and all("route-tables=true" in reason for (reason,) in letters)

    routed = run_relay(source_url(aws.endpoint_url, stream, once="true", route_tables="true"), sqlite_url, "unused")
    assert routed.returncode == 0, routed.stderr[-2000:]
    assert ids_in(sqlite_url, "users") == {"u0", "u1", "u2", "u3"}
    assert ids_in(sqlite_url, "orders_v2") == {"o0", "o1", "o2"}  # a dot is not allowed in CrateDB table names


@pytest.mark.parametrize(("ttl", "expected"), [("delete", {"stays"}), ("ignore", {"stays", "expires"})])
def test_ttl_expiries_delete_or_are_ignored(aws: LocalAws, sqlite_url: str, ttl: str, expected: set[str]) -> None:
    stream = new_stream(aws)
    records = [
        cdc_record("INSERT", "stays", T0),
        cdc_record("INSERT", "expires", T0 + 1),
        cdc_record("REMOVE", "expires", T0 + 2, ttl=True),
    ]
    put_records(aws.client("kinesis"), stream, records)
    done = run_relay(source_url(aws.endpoint_url, stream, once="true", ttl=ttl), sqlite_url, "t")
    assert done.returncode == 0, done.stderr[-2000:]
    assert ids_in(sqlite_url, "t") == expected
