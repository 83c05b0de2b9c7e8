"""End to end: a full load of a DynamoDB table that writers keep changing, followed by its stream through the real
KCL, into a real database; then `verify`. The oracle is a scan of the emulated DynamoDB table.

The target is CrateDB for the run with writers, PostgreSQL for once=true and the hand-over (each KCL run costs up to
a minute; tests/integration/test_fullload.py covers the full load next to a stream on all three databases).
The table holds data before its stream is switched on (that history never reaches Kinesis), as most users' tables
do. Writers put, update and delete items before, during and after the scan; the pump carries their changes into
Kinesis as "Kinesis Data Streams for DynamoDB" would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kcl_relay.cdc.event import Item, canonical_key
from kcl_relay.cdc.jsonenc import loads
from kcl_relay.cdc.values import from_item
from kcl_relay.localaws.pump import PumpClients, StreamPump
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table, fill_table, scan_items, write_until
from kcl_relay.sink.target import parse_target
from kcl_relay.source.dynamodb import typed_key
from tests.support.e2e import ENV, FAST, app_name, relay_command, run_relay, state_dir, wait_for
from tests.support.tables import read_items, same_value

pytestmark = pytest.mark.timeout(600)

KEY_SCHEMA = (("tenant", "S"), ("id", "N"))
KEY_TYPES = dict(KEY_SCHEMA)
N_KEYS = 900


@dataclass
class Source:
    aws: LocalAws
    table: str
    stream: str
    pump: StreamPump

    @property
    def host(self) -> str:
        return self.aws.endpoint_url.removeprefix("http://")

    def table_url(self, **options: str) -> str:
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"dynamodb://{self.host}/{self.table}" + (f"?{query}" if query else "")

    def oracle(self) -> dict[str, Item]:
        items = {}
        for raw in scan_items(self.aws.client("dynamodb"), self.table).values():
            item = from_item(raw)
            items[canonical_key({name: item[name] for name, _ in KEY_SCHEMA})] = item
        return items


@pytest.fixture
def source(aws: LocalAws) -> Iterator[Source]:
    """A table with data whose history is not in the stream (pumped into a scratch stream, as if before)."""
    suffix = uuid.uuid4().hex[:8]
    table, stream = f"accounts-{suffix}", f"accounts-cdc-{suffix}"
    ddb, kinesis = aws.client("dynamodb"), aws.client("kinesis")
    create_table(ddb, table, KEY_SCHEMA)
    fill_table(ddb, table, N_KEYS // 2, seed=3)
    create_stream(kinesis, stream, shards=2)
    create_stream(kinesis, f"{stream}-before", shards=1)
    clients = PumpClients.for_endpoint(aws.endpoint_url)
    before = StreamPump(clients, table, f"{stream}-before")
    before.pump_available()
    yield Source(aws, table, stream, StreamPump(clients, table, stream, state=before.state))


class Background:
    """Writers on the table and the pump into Kinesis, each in a thread, until stopped."""

    def __init__(self, source: Source, seed: int) -> None:
        self.source = source
        self.stop_writers, self.stop_pump = threading.Event(), threading.Event()
        self.writes = 0
        ddb = source.aws.client("dynamodb")
        self.writer = threading.Thread(target=self._write, args=(ddb, seed), daemon=True)
        self.pumper = threading.Thread(target=source.pump.follow, args=(self.stop_pump, 0.1), daemon=True)

    def _write(self, ddb: object, seed: int) -> None:
        self.writes = write_until(ddb, self.source.table, self.stop_writers, seed=seed, n_keys=N_KEYS, pause=0.002)

    def __enter__(self) -> Background:
        self.writer.start()
        self.pumper.start()
        return self

    def stop(self) -> None:
        """Writers first, then the pump, which then puts whatever is left."""
        self.stop_writers.set()
        self.writer.join()
        self.stop_pump.set()
        self.pumper.join()
        self.source.pump.pump_available()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def verify(source: Source, target_url: str, table: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kcl_relay", "verify", source.table_url(), "--target", target_url]
    return subprocess.run(
        [*command, "--table", table, *args], env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300
    )


def assert_equal_to_dynamodb(source: Source, target_url: str, table: str) -> None:
    oracle = source.oracle()
    got = read_items(parse_target(target_url, table), dict(KEY_SCHEMA))
    assert got.keys() == oracle.keys()
    differing = [key for key, item in oracle.items() if not same_value(item, got[key])]
    assert not differing, f"{len(differing)} rows differ, e.g. {differing[:3]}"


def test_full_load_then_stream_while_writers_change_the_table(source: Source, cratedb_url: str, tmp_path: Path) -> None:
    """Writers keep changing the table before, during and after the scan; the relay follows the stream until the
    target equals the table, then stops on SIGTERM. Changes that bypass the stream are drift: verify names them.

    CrateDB only: each KCL run costs up to a minute, and tests/integration/test_fullload.py runs the same scenario
    (the stream read without the KCL) on CrateDB, PostgreSQL and SQLite."""
    target_url = cratedb_url
    table = f"accounts_{uuid.uuid4().hex[:8]}"
    url = source.table_url(stream=source.stream, app=app_name(), segments="4", **{"page-size": "10"}, **FAST)
    log = tmp_path / "relay.log"
    with Background(source, seed=11) as background:
        time.sleep(1.0)  # writers were busy before the relay started, too
        with open(log, "wb") as handle:
            command = relay_command(url, target_url, table)
            relay = subprocess.Popen(command, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=handle)
        try:
            wait_for(lambda: re.search(r"snapshot of \S+ done: ", log.read_text()), 240, "the snapshot")
            time.sleep(1.0)  # ... and after it
            background.stop()
            assert background.writes > 100
            # The relay follows the stream: the target reaches the table's final state while it runs.
            wait_for(lambda: verify(source, target_url, table, "--settle", "0").returncode == 0, 180, "in sync")
            assert_equal_to_dynamodb(source, target_url, table)
        finally:
            relay.send_signal(signal.SIGTERM)
            code = relay.wait(timeout=120)
    stderr = log.read_text()
    assert code == 0, stderr[-3000:]
    assert "stopped (SIGTERM)" in stderr
    snapshot = re.search(r"snapshot of \S+ done: \d+ items .* (\d+) dead letters", stderr)
    assert snapshot and snapshot.group(1) == "0", stderr[-3000:]
    print(f"\n[full load e2e] {background.writes} writes during the run; {snapshot.group(0)}")

    ddb = source.aws.client("dynamodb")
    changed, deleted = sorted(source.oracle())[:2]
    ddb.put_item(TableName=source.table, Item={"tenant": {"S": "drift"}, "id": {"N": "7"}, "note": {"S": "new"}})
    ddb.update_item(
        TableName=source.table,
        Key=typed_key(loads(changed), KEY_TYPES),
        UpdateExpression="SET note = :n",
        ExpressionAttributeValues={":n": {"S": "changed behind the relay's back"}},
    )
    ddb.delete_item(TableName=source.table, Key=typed_key(loads(deleted), KEY_TYPES))
    drift = verify(source, target_url, table, "--settle", "0.5")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert 'missing in the target: 1: {"id":7,"tenant":"drift"}' in drift.stdout
    assert f"differing: 1: {changed}" in drift.stdout
    assert f"extra in the target: 1: {deleted}" in drift.stdout
    assert drift.stdout.splitlines()[-1] == "drift: 3 keys"


def test_once_ends_by_itself_and_the_stream_relay_takes_over(source: Source, postgresql_url: str) -> None:
    """once=true ends the command when the scan is done and every shard was read to its tip after that; the stream
    relay of the same application (the URL it prints) then goes on from the checkpoints, with no gap."""
    table = f"accounts_{uuid.uuid4().hex[:8]}"
    ddb = source.aws.client("dynamodb")
    write_until(ddb, source.table, limit=100, seed=21, n_keys=N_KEYS)
    source.pump.pump_available()  # changes in the stream from before the scan
    app = app_name()
    done = run_relay(source.table_url(stream=source.stream, once="true", app=app, **FAST), postgresql_url, table)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every shard is caught up (once=true): stopping" in done.stderr
    assert re.search(r"snapshot of \S+ done: \d+ items", done.stderr)
    assert verify(source, postgresql_url, table).returncode == 0
    assert_equal_to_dynamodb(source, postgresql_url, table)

    hint = re.search(r"kcl-relay load table '(kinesis\+dynamodb\+cdc://[^']+)'", done.stderr)
    assert hint, done.stderr[-2000:]
    assert f"app={app}" in hint.group(1)
    write_until(ddb, source.table, limit=50, seed=22, n_keys=N_KEYS)
    source.pump.pump_available()
    stream_url = hint.group(1) + "&once=true&" + "&".join(f"{k}={v}" for k, v in FAST.items())
    resumed = run_relay(stream_url, postgresql_url, table)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after checkpoint" in (state_dir(resumed.stderr) / "processor.log").read_text()
    checked = verify(source, postgresql_url, table)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == "in sync"
    assert_equal_to_dynamodb(source, postgresql_url, table)
