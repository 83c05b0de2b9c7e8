"""A fleet: two workers with the same application name share one stream's shards; SIGTERM stops each gracefully."""

from __future__ import annotations

import json
import re
import signal
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

    owned = [{status["shard_id"] for status in shard_statuses(log) if status["applied"]} for log in logs]
    assert all(owned), f"each worker applied records of its own shards: {owned}"
    assert set().union(*owned) == {f"shardId-{i:012d}" for i in range(SHARDS)}
    for log in logs:
        assert re.search(
            r"stopped \(SIGTERM\): processors flushed and checkpointed \(\d+ at shutdown\)", log.read_text()
        )
