"""End to end: item writes on the emulated DynamoDB -> Kinesis (2 shards) -> the real KCL MultiLangDaemon -> our
processor -> a real database. The oracle is a scan of the DynamoDB table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kcl_relay.cdc.event import Item, canonical_key
from kcl_relay.cdc.values import from_item
from kcl_relay.kcl.daemon import SetupError, find_jars, find_java
from kcl_relay.localaws.pump import PumpClients, StreamPump
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table, run_workload, scan_items
from kcl_relay.sink.target import parse_target
from tests.support.tables import read_items, same_value

try:
    find_java(), find_jars()
    MISSING_KCL = ""
except SetupError as error:
    MISSING_KCL = str(error)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(bool(MISSING_KCL), reason=f"needs Java and the KCL jars: {MISSING_KCL}"),
]

TABLE, STREAM = "orders", "orders-cdc"
KEY_SCHEMA = (("tenant", "S"), ("id", "N"))
# Short KCL intervals: a fresh lease table otherwise waits minutes before the first lease is taken.
FAST = "once=true&shard-sync-interval=1&idle-sleep=0.2&failover-time=2"


@dataclass
class Source:
    aws: LocalAws
    events: int
    oracle: dict[str, Item]


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    with LocalAws() as aws:
        ddb = aws.client("dynamodb")
        create_table(ddb, TABLE, KEY_SCHEMA)
        create_stream(aws.client("kinesis"), STREAM, shards=2)
        counts = run_workload(ddb, TABLE, n_writes=600, n_updates=300, n_deletes=150, seed=7, n_keys=300)
        put = StreamPump(PumpClients.for_endpoint(aws.endpoint_url), TABLE, STREAM).pump_available()
        oracle = {}
        for raw in scan_items(ddb, TABLE).values():
            item = from_item(raw)
            oracle[canonical_key({name: item[name] for name, _ in KEY_SCHEMA})] = item
        assert counts.total_events >= 1000 and put >= counts.total_events
        yield Source(aws=aws, events=put, oracle=oracle)


def relay(source: Source, target_url: str, table: str) -> str:
    """Run `kcl-relay load table` to completion (once=true); return its stderr."""
    host = source.aws.endpoint_url.removeprefix("http://")
    url = f"kinesis+dynamodb+cdc://{host}/{STREAM}?{FAST}&app=e2e-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    done = subprocess.run(
        [sys.executable, "-m", "kcl_relay", "load", "table", url, "--target", target_url, "--table", table],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""  # nothing but the protocol may reach a stdout, and ours stays quiet
    return done.stderr


@pytest.fixture(params=["sqlite", "postgresql", "cratedb"])
def target_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_target_table_equals_dynamodb_scan(source: Source, target_url: str) -> None:
    table = f"orders_{uuid.uuid4().hex[:8]}"
    log = relay(source, target_url, table)
    spec = parse_target(target_url, table)
    got = read_items(spec, dict(KEY_SCHEMA))
    assert got.keys() == source.oracle.keys()
    mismatched = [key for key, item in source.oracle.items() if not same_value(item, got[key])]
    assert not mismatched, f"{len(mismatched)} rows differ, e.g. {mismatched[:3]}"
    assert re.search(r"first records applied [\d.]+ s after start", log)
    assert re.search(r"done: \d+ records read, \d+ events applied, 0 dead letters", log)
    print(f"\n[e2e {spec.dialect}] {source.events} records, {len(got)} rows")
    print("\n".join(line for line in log.splitlines() if "first records" in line or "done:" in line))


def test_second_run_resumes_from_checkpoints(source: Source, sqlite_url: str) -> None:
    """A second run of the same application applies nothing again: the first one checkpointed at the end."""
    table = "orders_resume"
    host = source.aws.endpoint_url.removeprefix("http://")
    url = f"kinesis+dynamodb+cdc://{host}/{STREAM}?{FAST}&app=e2e-resume"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    command = [sys.executable, "-m", "kcl_relay", "load", "table", url, "--target", sqlite_url, "--table", table]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "first records applied" not in second.stderr
    assert "done: 0 records read, 0 events applied" in second.stderr
