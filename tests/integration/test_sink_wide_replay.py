"""Issue 15 as the user met it: a file of CDC records whose first two items carry 1,200 attributes each, replayed
through the file source (`kcl-relay load table kinesis+dynamodb+cdc:///ABS/file.ndjson?batch-size=2`).

CrateDB holds at most 1,000 columns per table. Before, both rows of the first batch were rejected for the column
limit, "all rows rejected alike" was taken for a fault of the system and retried until retry-timeout: the replay
failed (and a KCL shard stuck for good, the same batch delivered again). Now every item lands, the attributes that do
not fit the table's columns in aux, and nothing is a dead letter. The same on PostgreSQL and SQLite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kcl_relay.cdc.event import canonical_key
from kcl_relay.cli import cli
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from tests.support.records import cdc_record
from tests.support.tables import read_items, relation

WIDE = 1200


def items() -> list[dict[str, str]]:
    wide = [{"id": f"w{n}", **{f"attribute_{j:04d}": f"value {j} of w{n}" for j in range(WIDE)}} for n in (1, 2)]
    narrow = [{"id": f"n{n}", "attribute_0001": f"narrow {n}", "note": "x" * n} for n in range(1, 6)]
    return [*wide, *narrow]


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, TargetSpec]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'relay.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    spec = parse_target(url, f"wide_{uuid.uuid4().hex[:10]}")
    yield url, spec
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        run_sql(spec, f"DROP TABLE IF EXISTS {relation(spec, suffix)}", commit=True)


def test_wide_items_replayed_two_per_batch_all_land(target: tuple[str, TargetSpec], tmp_path: Path) -> None:
    url, spec = target
    path = tmp_path / "cdc.ndjson"
    expected = items()
    records = []
    for micros, item in enumerate(expected, start=1):
        attributes = {name: value for name, value in item.items() if name != "id"}
        records.append(json.dumps(cdc_record("INSERT", item["id"], 1_735_689_600_000_000 + micros, **attributes)))
    path.write_text("\n".join(records) + "\n")
    # A short retry-timeout: before the fix the first batch was retried until it ran out (then exit 1).
    source = f"kinesis+dynamodb+cdc://{path}?batch-size=2&retry-timeout=5"
    result = CliRunner().invoke(cli, ["load", "table", source, "--target", url, "--table", spec.table])
    assert result.exit_code == 0, result.output
    assert f"replayed {len(expected)} records" in result.stderr and "0 dead letters" in result.stderr
    assert read_items(spec, {"id": "S"}) == {canonical_key({"id": item["id"]}): item for item in expected}
