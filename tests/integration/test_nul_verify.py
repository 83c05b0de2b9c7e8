"""Issue 15 end to end: items holding NUL (U+0000), and the marker of PostgreSQL's NUL escape, in a DynamoDB table
(the emulator) are fully loaded into each database, verify finds no drift, and a later full load prunes a NUL-keyed
row that is gone (kcl_relay/verify.py and fullload.py read the target through sink/reader.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kcl_relay import fullload
from kcl_relay.cdc.event import ChangeEvent, KeyType, Position, canonical_key
from kcl_relay.cdc.values import from_item
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_table, scan_items
from kcl_relay.sink.reader import comparable
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import open_sink
from kcl_relay.source import dynamodb
from kcl_relay.source.table_url import parse_table
from kcl_relay.verify import VerifyOptions, compare
from tests.support.tables import reader_items

pytestmark = pytest.mark.timeout(300)

MARK = "\ufdd0"
KEY_SCHEMA = (("h", "S"), ("r", "S"))
KEY_TYPES: dict[str, KeyType] = dict(KEY_SCHEMA)  # type: ignore[arg-type]
ITEMS: list[dict[str, Any]] = [
    {
        "h": {"S": "a\x00b"},
        "r": {"S": "\x00"},
        "s": {"S": "x\x00y"},
        "na\x00me": {"N": "1"},
        "m": {"M": {"k\x00": {"M": {"deep\x00": {"S": "v\x00"}}}, MARK: {"S": MARK + "0"}}},
        "ss": {"SS": ["\x00", "a\x00", MARK]},
        "l": {"L": [{"S": "\x00"}, {"M": {"\x00": {"L": [{"S": "\x00"}]}}}, {"N": "5"}]},
    },
    {"h": {"S": "a" + MARK + "0b"}, "r": {"S": "\x00"}, "s": {"S": "another's escaped key"}},
    {"h": {"S": MARK}, "r": {"S": MARK + "1"}, MARK + "1": {"S": MARK + "\x00"}, "lit": {"S": "\\u0000"}},
    {"h": {"S": "plain"}, "r": {"S": "plain"}, "v": {"N": "2"}},
]


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAws]:
    with LocalAws(log_path=tmp_path_factory.mktemp("localaws") / "moto.log") as emulators:
        yield emulators


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def target(request: pytest.FixtureRequest) -> TargetSpec:
    return parse_target(request.getfixturevalue(f"{request.param}_url"), f"t_{uuid.uuid4().hex[:10]}")


def test_nul_items_load_verify_and_prune(aws: LocalAws, target: TargetSpec) -> None:
    name = f"nul-{uuid.uuid4().hex[:8]}"
    ddb = aws.client("dynamodb")
    create_table(ddb, name, KEY_SCHEMA, stream=False)
    for item in ITEMS:
        ddb.put_item(TableName=name, Item=item)
    oracle = {}
    for raw in scan_items(ddb, name).values():
        item = from_item(raw)
        oracle[canonical_key({key: item[key] for key in KEY_TYPES})] = comparable(item)
    assert len(oracle) == len(ITEMS)  # the emulator keeps them apart, as DynamoDB does

    # a row of an older copy, NUL in its key, that the table no longer has: the load prunes it
    gone = {"h": "gone\x00", "r": "\x00"}
    old = int(time.time() * 1_000_000) - 86_400_000_000
    sink = open_sink(target)
    try:
        sink.ensure_table(KEY_TYPES)
        sink.claim_source_table(name)
        written = sink.apply([ChangeEvent("INSERT", name, gone, KEY_TYPES, dict(gone), old, Position("s", "1"))])
        assert written.dead_letters == []
    finally:
        sink.close()

    spec = parse_table(f"dynamodb://test:test@{aws.endpoint_url.removeprefix('http://')}/{name}")
    client, clock = dynamodb.client(spec), dynamodb.AwsClock()
    info = dynamodb.describe(spec, client, clock)
    fullload.prepare_target(target, info)
    snapshot = fullload.Snapshot(spec, target, client, info, clock)
    snapshot.run(threading.Event())
    assert snapshot.complete
    assert (snapshot.stats.dead_letters, snapshot.stats.pruned) == (0, 1)

    assert reader_items(target, KEY_TYPES) == oracle  # exactly the items
    for options in ({}, {"sample": 1.0}):
        report, _ = compare(spec, target, VerifyOptions(settle=0, **options))
        assert report.in_sync, report.lines(name, target.describe(), 5)
