"""Running the real relay (the KCL MultiLangDaemon and our processor) against the emulators, for e2e tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kcl_relay.kcl.daemon import SetupError, find_jars, find_java
from kcl_relay.localaws.server import LocalAws
from kcl_relay.sink.target import parse_target
from tests.support.records import cdc_record
from tests.support.tables import read_items

__all__ = [  # cdc_record re-exported: the e2e modules build their records with it
    "ENV",
    "FAST",
    "app_name",
    "cdc_record",
    "ids_in",
    "missing_kcl",
    "new_stream",
    "put_records",
    "relay_command",
    "run_relay",
    "source_url",
    "start_relay",
    "state_dir",
    "wait_for",
]

# Short KCL intervals: shard discovery every second (resharding tests), a dead worker's leases move after 2 s (fleet
# tests), no pause at the tip. A fresh lease table no longer needs them: the relay writes it before the KCL starts.
# Logs at info: the tests read the processors' lines (shard starts, flushes, shutdown).
FAST = {"shard-sync-interval": "1", "idle-sleep": "0.2", "failover-time": "2", "log-level": "info"}
ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def missing_kcl() -> str:
    """Why the KCL cannot run here, or "" when Java and the jars are present."""
    try:
        find_java(), find_jars()
    except SetupError as error:
        return str(error)
    return ""


def source_url(endpoint_url: str, stream: str, **options: str) -> str:
    query = "&".join(f"{name.replace('_', '-')}={value}" for name, value in {**FAST, **options}.items())
    return f"kinesis+dynamodb+cdc://{endpoint_url.removeprefix('http://')}/{stream}?{query}"


def relay_command(url: str, target_url: str, table: str) -> list[str]:
    return [sys.executable, "-m", "kcl_relay", "load", "table", url, "--target", target_url, "--table", table]


def run_relay(url: str, target_url: str, table: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`kcl-relay load table` to its end (once=true, or an error)."""
    return subprocess.run(
        relay_command(url, target_url, table),
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_relay(url: str, target_url: str, table: str, log: Path) -> subprocess.Popen[bytes]:
    """`kcl-relay load table` in the background, stderr to `log`."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            relay_command(url, target_url, table), env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=handle
        )


def state_dir(stderr: str) -> Path:
    match = re.search(r"logs in (\S+)", stderr)
    assert match, stderr[-2000:]
    return Path(match.group(1))


def app_name() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def put_records(kinesis: Any, stream: str, records: Sequence[dict[str, Any]]) -> list[str]:
    """Put records one by one (their order kept), partitioned by item key; return their sequence numbers."""
    numbers = []
    for record in records:
        key = json.dumps(record["dynamodb"]["Keys"], sort_keys=True)
        numbers.append(
            kinesis.put_record(StreamName=stream, Data=json.dumps(record).encode(), PartitionKey=key)["SequenceNumber"]
        )
    return numbers


def new_stream(aws: LocalAws, shards: int = 1, region: str = "us-east-1") -> str:
    """A fresh ACTIVE stream on the emulators (which keep each region apart, like AWS)."""
    name = f"s-{app_name()}"
    kinesis = aws.client("kinesis", region=region)
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    return name


def ids_in(target_url: str, table: str) -> set[str]:
    """The `id` keys of the items in a target table (items made by cdc_record)."""
    return {item["id"] for item in read_items(parse_target(target_url, table), {"id": "S"}).values()}
