"""A table's DynamoDB stream, end to end: the launcher's DynamoDB Streams entry point (the adapter's Scheduler) and
our processor on the emulator, into CrateDB, PostgreSQL and SQLite. The oracle is a Scan of the emulated table.

Short forms for CI: one once=true relay per database (writes, updates and deletes), and on CrateDB one fleet
scenario: two workers share the stream, the lease holder is SIGKILLed (supervisor, JVM and processors), the shard
rolls over (the emulator's hook; moto alone never does), the survivor carries on, and a restart resumes from the
checkpoints.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from pathlib import Path

import pytest

from kcl_relay.cdc.event import canonical_key
from kcl_relay.cdc.values import from_item
from kcl_relay.localaws.app import ROLL_PATH
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_table, fill_table, run_workload, scan_items, write_until
from kcl_relay.sink.target import parse_target
from tests.support.e2e import FAST, app_name, run_relay, state_dir, wait_for
from tests.support.faults import Worker, leases
from tests.support.tables import read_items, same_value

pytestmark = pytest.mark.timeout(900)
KEY_TYPES = {"id": "S"}


def new_table(aws: LocalAws) -> str:
    name = f"ddbs-{uuid.uuid4().hex[:10]}"
    create_table(aws.client("dynamodb"), name, (("id", "S"),))  # stream NEW_AND_OLD_IMAGES
    return name


def streams_url(aws: LocalAws, table: str, **options: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in {**FAST, **options}.items())
    return f"dynamodb+cdc://{aws.endpoint_url.removeprefix('http://')}/{table}?{query}"


def differences(aws: LocalAws, table: str, target_url: str, target_table: str) -> str:
    """ "" when the target holds exactly the table's items, else what differs."""
    oracle = {}
    for raw in scan_items(aws.client("dynamodb"), table).values():
        item = from_item(raw)
        oracle[canonical_key({"id": item["id"]})] = item
    try:
        got = read_items(parse_target(target_url, target_table), KEY_TYPES)
    except Exception as error:  # the table appears with the first batch
        return f"target not readable yet: {type(error).__name__}"
    if got.keys() != oracle.keys():
        return f"keys: {len(got.keys() - oracle.keys())} extra, {len(oracle.keys() - got.keys())} missing"
    differing = [key for key, item in oracle.items() if not same_value(item, got[key])]
    return f"{len(differing)} rows differ, e.g. {differing[:3]}" if differing else ""


def stream_records(aws: LocalAws, table: str) -> int:
    """How many records the table's stream holds (every shard from its trim horizon), read with boto3."""
    arn = aws.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = aws.client("dynamodbstreams")
    total = 0
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        position = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while position:
            page = streams.get_records(ShardIterator=position)
            total += len(page["Records"])
            position = page.get("NextShardIterator") if page["Records"] else None
    return total


def records_read(stderr: str) -> int:
    match = re.search(r"done: (\d+) records read", stderr)
    assert match, stderr[-2000:]
    return int(match.group(1))


@pytest.mark.parametrize("database", ["cratedb_url", "postgresql_url", "sqlite_url"])
def test_writes_updates_and_deletes_end_equal_to_the_scan(
    aws: LocalAws, database: str, request: pytest.FixtureRequest
) -> None:
    target_url: str = request.getfixturevalue(database)
    table = new_table(aws)
    counts = run_workload(aws.client("dynamodb"), table, n_writes=120, n_updates=60, n_deletes=40, n_keys=50, seed=7)
    assert counts.modifies and counts.removes  # several changes per key, many within one second
    target_table = f"ddbs_{uuid.uuid4().hex[:8]}"
    done = run_relay(streams_url(aws, table, once="true", app=app_name()), target_url, target_table)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DynamoDB stream arn:aws:dynamodb:" in done.stderr
    assert records_read(done.stderr) == stream_records(aws, table)  # every record once
    assert differences(aws, table, target_url, target_table) == ""
    # A fresh lease table: the launcher's early shard sync wrote the leases, so the KCL skipped its random 1-30 s wait.
    kcl_log = (state_dir(done.stderr) / "kcl.log").read_text()
    assert "wrote the leases of an empty lease table" in kcl_log
    assert "Lease table is still empty" not in kcl_log


def roll_shard(aws: LocalAws, table: str) -> str:
    hook = urllib.request.Request(f"{aws.endpoint_url}{ROLL_PATH}?table={table}", method="POST")
    with urllib.request.urlopen(hook, timeout=10) as answer:
        return str(answer.read().decode())


def test_two_workers_a_sigkill_a_rollover_and_a_restart(aws: LocalAws, cratedb_url: str, tmp_path: Path) -> None:
    table, target_table, app = new_table(aws), f"ddbs_{uuid.uuid4().hex[:8]}", app_name()
    ddb = aws.client("dynamodb")
    run_workload(ddb, table, n_writes=80, n_updates=40, n_deletes=20, n_keys=40, seed=1)
    url = streams_url(aws, table, app=app)
    workers = [Worker(name, url, cratedb_url, target_table, tmp_path / f"{name}.log") for name in ("a", "b")]
    try:
        wait_for(lambda: differences(aws, table, cratedb_url, target_table) == "", 240, "the first changes applied")

        # SIGKILL of the worker holding the (one open) shard's lease: the other takes it over after failover-time.
        (lease,) = leases(aws, app).values()
        holder = next(worker for worker in workers if worker.worker_id == lease.owner)
        survivor = next(worker for worker in workers if worker is not holder)
        holder.crash()
        child = roll_shard(aws, table)  # the parent shard ends; the changes below go to its child
        run_workload(ddb, table, n_writes=60, n_updates=40, n_deletes=20, n_keys=40, seed=2)
        wait_for(
            lambda: differences(aws, table, cratedb_url, target_table) == "", 240, "the changes after the kill applied"
        )
        owners = {shard: lease.owner for shard, lease in leases(aws, app).items()}
        assert owners.get(child) == survivor.worker_id, (owners, survivor.tail(), holder.tail())
        assert survivor.terminate() == 0, survivor.tail()
    finally:
        for worker in workers:
            worker.cleanup()

    # A restart resumes from the checkpoints: it reads only what came after them.
    before = stream_records(aws, table)
    run_workload(ddb, table, n_writes=20, n_updates=10, n_deletes=5, n_keys=40, seed=3)
    resumed = run_relay(streams_url(aws, table, app=app, once="true"), cratedb_url, target_table)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert records_read(resumed.stderr) == stream_records(aws, table) - before
    assert differences(aws, table, cratedb_url, target_table) == ""


def test_a_full_load_hands_over_to_the_tables_dynamodb_stream(aws: LocalAws, postgresql_url: str) -> None:
    """stream=:dynamodb: the scan, then the table's own stream from its trim horizon (changes from before the scan
    are stale against it); once=true ends it, and the stream relay of the same application goes on from there."""
    table, target_table, app = new_table(aws), f"ddbs_{uuid.uuid4().hex[:8]}", app_name()
    ddb = aws.client("dynamodb")
    fill_table(ddb, table, 60, seed=4)
    write_until(ddb, table, limit=80, seed=5, n_keys=60)  # in the stream, and older than the scan
    host = aws.endpoint_url.removeprefix("http://")
    options = "&".join(f"{name}={value}" for name, value in FAST.items())
    done = run_relay(
        f"dynamodb://{host}/{table}?stream=:dynamodb&once=true&app={app}&{options}", postgresql_url, target_table
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starts at its trim horizon, before the scan begins" in done.stderr
    assert differences(aws, table, postgresql_url, target_table) == ""

    hint = re.search(r"kcl-relay load table '(dynamodb\+cdc://[^']+)'", done.stderr)
    assert hint and f"app={app}" in hint.group(1), done.stderr[-2000:]
    write_until(ddb, table, limit=40, seed=6, n_keys=60)
    resumed = run_relay(f"{hint.group(1)}&once=true&{options}", postgresql_url, target_table)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert differences(aws, table, postgresql_url, target_table) == ""
