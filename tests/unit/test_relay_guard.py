"""Start and stop decisions against a lease table in moto (in process), with a real SQLite target.

A target that lost what the checkpoints say was relayed stops the relay (exit 2) unless reset=true starts over;
a graceful stop hands the leases over to live workers, or keeps them for a restart.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kcl_relay.kcl.leases import LeaseTables, prepare_leases
from kcl_relay.relay import LeaseHandBack, refuse_emptied_target, reset_application
from kcl_relay.sink.target import parse_target
from kcl_relay.source.url import SourceError, parse_source

SEQUENCE_NUMBER = "49650000000000000000000000000000000000000000000000000002"


@pytest.fixture
def relayed(tmp_path: Path) -> Any:
    """An application whose only shard has a checkpoint past its start, and the SQLite target it wrote to."""
    stream = f"s-{uuid.uuid4().hex[:8]}"  # a spec of its own: kinesis.client caches one client per spec
    spec = parse_source(f"kinesis+dynamodb+cdc://aws/{stream}?app=app-{stream}")
    tables = LeaseTables.of({"applicationName": spec.app or ""})
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=spec.region)
        kinesis = boto3.client("kinesis", region_name=spec.region)
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        prepare_leases(dynamodb, kinesis, tables, stream, "TRIM_HORIZON")
        shard = dynamodb.scan(TableName=tables.leases)["Items"][0]["leaseKey"]
        dynamodb.update_item(
            TableName=tables.leases,
            Key={"leaseKey": shard},
            UpdateExpression="SET checkpoint = :c",
            ExpressionAttributeValues={":c": {"S": SEQUENCE_NUMBER}},
        )
        target = parse_target(f"sqlite:///{tmp_path / 'relay.db'}", "orders")
        yield spec, target, tables, tmp_path / "relay.db"


def make_table(path: Path, name: str, rows: int) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(f'CREATE TABLE "{name}" (id TEXT PRIMARY KEY)')
        connection.executemany(f'INSERT INTO "{name}" VALUES (?)', [(str(n),) for n in range(rows)])


def test_a_missing_target_table_with_checkpoints_stops_and_names_the_way_out(relayed: Any) -> None:
    spec, target, tables, _path = relayed
    with pytest.raises(SourceError) as error:
        refuse_emptied_target(spec, target, tables)
    message = str(error.value)
    assert "\n" not in message
    assert f"target table orders is missing, but lease table {tables.leases} has checkpoints of 1 shard(s)" in message
    assert "reset=true" in message and "kclrelay.reset = true" in message and "--reset" in message


def test_an_empty_target_table_with_checkpoints_stops(relayed: Any) -> None:
    spec, target, tables, path = relayed
    make_table(path, "orders", 0)
    with pytest.raises(SourceError, match="target table orders is empty, but lease table"):
        refuse_emptied_target(spec, target, tables)


@pytest.mark.parametrize("companion", ["orders__tombstones", "orders__deadletters"])
def test_an_empty_table_whose_items_were_deleted_or_dead_lettered_is_a_real_state(relayed: Any, companion: str) -> None:
    spec, target, tables, path = relayed
    make_table(path, "orders", 0)
    make_table(path, companion, 1)
    refuse_emptied_target(spec, target, tables)


def test_a_table_with_rows_resumes(relayed: Any) -> None:
    spec, target, tables, path = relayed
    make_table(path, "orders", 3)
    refuse_emptied_target(spec, target, tables)


def test_a_fresh_application_never_stops(relayed: Any) -> None:
    spec, target, _tables, _path = relayed
    refuse_emptied_target(spec, target, LeaseTables.of({"applicationName": "never-ran"}))


def test_reset_forgets_the_checkpoints(relayed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec, target, tables, _path = relayed
    reset_application(spec, tables)
    assert f"reset=true: deleted {tables.leases}" in capsys.readouterr().err
    refuse_emptied_target(spec, target, tables)  # no checkpoints left: nothing to protect


# ---- after a graceful stop: hand the leases over, or keep them for a restart -----------------------------------


def own_all(spec: Any, tables: LeaseTables, owner: str) -> Any:
    dynamodb = boto3.client("dynamodb", region_name=spec.region)
    for item in dynamodb.scan(TableName=tables.leases)["Items"]:
        dynamodb.update_item(
            TableName=tables.leases,
            Key={"leaseKey": item["leaseKey"]},
            UpdateExpression="SET leaseOwner = :o",
            ExpressionAttributeValues={":o": {"S": owner}},
        )
    return dynamodb


def owners(dynamodb: Any, tables: LeaseTables) -> set[str | None]:
    items = dynamodb.scan(TableName=tables.leases)["Items"]
    return {item.get("leaseOwner", {}).get("S") for item in items}


def test_a_lone_worker_with_a_lasting_id_keeps_its_leases(relayed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec, _target, tables, _path = relayed
    dynamodb = own_all(spec, tables, "host-0")
    hand_back = LeaseHandBack(spec, {"applicationName": tables.leases, "workerId": "host-0"}, lasting_id=True)
    hand_back()
    hand_back()  # called again while the JVM shuts down: still kept, said once
    assert owners(dynamodb, tables) == {"host-0"}
    assert capsys.readouterr().err.count("kept the leases of worker host-0: no other worker is alive") == 1


def test_with_another_worker_alive_the_leases_go_back(relayed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec, _target, tables, _path = relayed
    dynamodb = own_all(spec, tables, "host-0")
    now = str(int(time.time()))
    dynamodb.put_item(TableName=tables.worker_metrics, Item={"wid": {"S": "host-1"}, "lut": {"N": now}})
    LeaseHandBack(spec, {"applicationName": tables.leases, "workerId": "host-0"}, lasting_id=True)()
    assert owners(dynamodb, tables) == {None}
    assert "handed back 1 leases of worker host-0 to the other workers (host-1)" in capsys.readouterr().err


def test_a_random_id_always_hands_back(relayed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec, _target, tables, _path = relayed
    dynamodb = own_all(spec, tables, "host-0123456789ab")
    LeaseHandBack(spec, {"applicationName": tables.leases, "workerId": "host-0123456789ab"}, lasting_id=False)()
    assert owners(dynamodb, tables) == {None}
    assert "handed back 1 leases of worker host-0123456789ab" in capsys.readouterr().err


# ---- a missing stream: where it was looked for, and the fix in the words of the input ------------------------------


def test_a_missing_stream_names_endpoint_and_region_and_the_fix_in_the_inputs_words(tmp_path: Path) -> None:
    from kcl_relay.kcl.properties import read_properties_file, spec_from_properties
    from kcl_relay.source import kinesis

    stream = f"gone-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "w.properties"
    path.write_text(f"streamName = {stream}\napplicationName = app-{stream}\nregionName = eu-west-1\n")
    from_file, _kcl, _relay = spec_from_properties(read_properties_file(path))
    from_url = parse_source(f"kinesis+dynamodb+cdc://aws/{stream}?region=eu-west-1&app=url-{stream}")
    with mock_aws():
        with pytest.raises(SourceError) as url_error:
            kinesis.prepare_stream(from_url)
        with pytest.raises(SourceError) as file_error:
            kinesis.prepare_stream(from_file)
    assert str(url_error.value) == (
        f"Kinesis stream '{stream}' not found at AWS eu-west-1; add ?create=true to create it"
    )
    assert str(file_error.value) == (
        f"Kinesis stream '{stream}' not found at AWS eu-west-1; set kclrelay.create = true to create it"
    )
