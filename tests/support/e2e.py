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

# Short KCL intervals: a fresh lease table otherwise waits a minute or more before the first lease is taken.
FAST = {"shard-sync-interval": "1", "idle-sleep": "0.2", "failover-time": "2"}
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


def cdc_record(
    op: str, key: str, micros: int, *, table: str = "items", ttl: bool = False, **attributes: str
) -> dict[str, Any]:
    """A Kinesis Data Streams for DynamoDB record of an item keyed `id` (S) with string attributes."""
    image = {"id": {"S": key}, **{name: {"S": value} for name, value in attributes.items()}}
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": micros,
        "Keys": {"id": {"S": key}},
        "SizeBytes": 100,
        "ApproximateCreationDateTimePrecision": "MICROSECOND",
    }
    if op == "REMOVE":
        dynamodb["OldImage"] = image
    else:
        dynamodb["NewImage"] = image
    identity = {"type": "Service", "principalId": "dynamodb.amazonaws.com"} if ttl else None
    return {
        "awsRegion": "us-east-1",
        "eventID": str(uuid.uuid4()),
        "eventName": op,
        "userIdentity": identity,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }


def put_records(kinesis: Any, stream: str, records: Sequence[dict[str, Any]]) -> list[str]:
    """Put records one by one (their order kept), partitioned by item key; return their sequence numbers."""
    numbers = []
    for record in records:
        key = json.dumps(record["dynamodb"]["Keys"], sort_keys=True)
        numbers.append(
            kinesis.put_record(StreamName=stream, Data=json.dumps(record).encode(), PartitionKey=key)["SequenceNumber"]
        )
    return numbers
