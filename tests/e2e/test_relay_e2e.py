"""End to end: item writes on the emulated DynamoDB -> Kinesis (2 shards) -> the real KCL MultiLangDaemon -> our
processor -> a real database. The oracle is a scan of the DynamoDB table."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kcl_relay.cdc.event import Item, canonical_key
from kcl_relay.cdc.values import from_item
from kcl_relay.localaws.pump import PumpClients, StreamPump
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table, run_workload, scan_items
from kcl_relay.sink.target import parse_target
from tests.support.e2e import app_name, run_relay, source_url, state_dir
from tests.support.tables import WORKLOAD_COLUMNS, read_items, same_value

pytestmark = pytest.mark.timeout(900)

TABLE, STREAM = "orders", "orders-cdc"
KEY_SCHEMA = (("tenant", "S"), ("id", "N"))


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


def relay(source: Source, target_url: str, table: str, app: str | None = None) -> str:
    """Run `kcl-relay load table` to completion (once=true); return its stderr."""
    url = source_url(source.aws.endpoint_url, STREAM, once="true", app=app or app_name())
    done = run_relay(url, target_url, table)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""  # our stdout stays quiet: the protocol channel is the processors' alone
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
    assert re.search(r"done: \d+ records read, \d+ applied after merging per key, 0 dead letters", log)
    print(f"\n[e2e {spec.dialect}] {source.events} records, {len(got)} rows")
    print("\n".join(line for line in log.splitlines() if "first records" in line or "done:" in line))


def test_second_run_resumes_from_checkpoints(source: Source, target_url: str) -> None:
    """A second run of the same application applies nothing again: the first one checkpointed at the end."""
    table, app = f"orders_resume_{uuid.uuid4().hex[:6]}", app_name()
    relay(source, target_url, table, app=app)
    second = relay(source, target_url, table, app=app)
    assert "first records applied" not in second
    assert "done: 0 records read, 0 applied after merging per key" in second
    assert "resuming after checkpoint" in (state_dir(second) / "processor.log").read_text()


def test_a_mapped_relay_equals_dynamodb_scan(source: Source, target_url: str, tmp_path: Path) -> None:
    """mapping= through the KCL: the processors shape rows into typed columns; read back through the relay's
    reader (columns at their paths), every item is the scan's, in the form verify compares."""
    from kcl_relay.cdc.event import ChangeEvent, Position
    from kcl_relay.sink.admin import run_sql
    from kcl_relay.sink.reader import TargetReader

    path = tmp_path / "orders.toml"
    path.write_text(WORKLOAD_COLUMNS)
    table = f"orders_mapped_{uuid.uuid4().hex[:8]}"
    url = source_url(source.aws.endpoint_url, STREAM, once="true", app=app_name(), mapping=str(path))
    done = run_relay(url, target_url, table)
    assert done.returncode == 0, done.stderr[-3000:]
    spec = parse_target(target_url, table)
    key_types = dict(KEY_SCHEMA)
    reader = TargetReader(spec, key_types)  # type: ignore[arg-type]
    try:
        assert reader.mapping is not None and len(reader.mapping.columns) == 7  # kept beside the table
        got = {row.key_id: row.item for row in reader.rows()}
        assert got.keys() == source.oracle.keys()
        for key_id, item in source.oracle.items():
            key = {name: item[name] for name, _ in KEY_SCHEMA}
            event = ChangeEvent("INSERT", TABLE, key, key_types, item, 1, Position("s", "1"))  # type: ignore[arg-type]
            assert got[key_id] == reader.stored_item(event), key_id
    finally:
        reader.close()
    relation = reader.relation
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")
    assert run_sql(spec, f'SELECT count(*) FROM {relation} WHERE "version" IS NOT NULL')[1][0][0] > 0
