"""A fleet: two workers with the same application name share one stream's shards; SIGTERM stops each gracefully."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from kcl_relay.localaws.server import LocalAws
from kcl_relay.sink.target import parse_target
from tests.support.e2e import app_name, cdc_record, put_records, source_url, start_relay, wait_for
from tests.support.tables import read_items

pytestmark = pytest.mark.timeout(600)
SHARDS, KEYS = 4, 200


def shard_statuses(log: Path) -> list[dict]:
    """The status files of a worker's processors (one per processor process)."""
    match = re.search(r"logs in (\S+)", log.read_text())
    if not match:
        return []
    return [json.loads(path.read_text()) for path in (Path(match.group(1)) / "shards").glob("*.json")]


def test_two_workers_share_the_shards(sqlite_url: str, tmp_path: Path) -> None:
    with LocalAws() as aws:
        stream = "fleet-cdc"
        kinesis = aws.client("kinesis")
        kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
        put_records(
            kinesis, stream, [cdc_record("INSERT", f"k{i:03d}", 1_795_000_000_000_000 + i) for i in range(KEYS)]
        )

        # max-leases=2 of 4 shards: each worker must take a share.
        url = source_url(aws.endpoint_url, stream, app=app_name(), max_leases="2")
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        workers = [start_relay(url, sqlite_url, "fleet", log) for log in logs]
        try:
            spec = parse_target(sqlite_url, "fleet")

            def all_applied() -> bool:
                try:
                    return len(read_items(spec, {"id": "S"})) == KEYS
                except Exception:  # the table appears with the first batch
                    return False

            wait_for(all_applied, 300, f"{KEYS} rows from two workers")
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=90) for worker in workers]
        assert codes == [0, 0], [log.read_text()[-1500:] for log in logs]

    ids = {match.group(1) for log in logs if (match := re.search(r"worker (\S+) of application", log.read_text()))}
    assert len(ids) == 2 and all(re.search(r"-[01]$", worker) for worker in ids), f"two stable ids, by slot: {ids}"
    owned = [{status["shard_id"] for status in shard_statuses(log) if status["applied"]} for log in logs]
    assert all(owned), f"each worker applied records of its own shards: {owned}"
    assert set().union(*owned) == {f"shardId-{i:012d}" for i in range(SHARDS)}
    for log in logs:
        assert re.search(
            r"stopped \(SIGTERM\): processors flushed and checkpointed \(\d+ at shutdown\)", log.read_text()
        )


def test_a_worker_that_stops_hands_its_shards_to_a_live_one(sqlite_url: str, tmp_path: Path) -> None:
    """SIGTERM on the worker that holds the shard: the live one takes it over at once, not after failover-time."""
    with LocalAws() as aws:
        stream = "handover-cdc"
        kinesis = aws.client("kinesis")
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
        put_records(kinesis, stream, [cdc_record("INSERT", "first", 1_795_000_000_000_000)])
        # failover-time 30 s: a takeover within it can only come from the hand-back.
        url = source_url(aws.endpoint_url, stream, app=app_name(), **{"failover-time": "30"})
        spec = parse_target(sqlite_url, "handover")
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]

        def rows() -> int:
            try:
                return len(read_items(spec, {"id": "S"}))
            except Exception:  # the table appears with the first batch
                return 0

        holder = start_relay(url, sqlite_url, "handover", logs[0])
        workers = [holder]
        try:
            wait_for(lambda: rows() == 1, 60, f"the first worker to apply the first record: {logs[0]}")
            workers.append(start_relay(url, sqlite_url, "handover", logs[1]))
            wait_for(lambda: "logs in" in logs[1].read_text(), 60, "the second worker to start")
            time.sleep(3)  # the second worker reports its metrics: alive in the lease table
            holder.send_signal(signal.SIGTERM)
            assert holder.wait(timeout=90) == 0, logs[0].read_text()[-1500:]
            put_records(kinesis, stream, [cdc_record("INSERT", "second", 1_795_000_001_000_000)])
            stopped = time.monotonic()
            wait_for(lambda: rows() == 2, 25, "the live worker to take the shard over")
            print(f"\n[handover] the live worker applied a new record {time.monotonic() - stopped:.1f} s after")
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=90) for worker in workers]
        assert codes == [0, 0], [log.read_text()[-1500:] for log in logs]
    assert re.search(r"handed back 1 leases of worker \S+ to the other workers", logs[0].read_text())
    assert re.search(r"kept the leases of worker \S+: no other worker is alive", logs[1].read_text())
