"""`kcl-relay redrive`: dead letters applied again once their cause is fixed, on CrateDB, PostgreSQL and SQLite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from kcl_relay.cdc.event import DeadLetter
from kcl_relay.cli import cli
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter
from tests.support.cleanup import drop_target_tables
from tests.support.records import cdc_record
from tests.support.sink_suite import T0, change
from tests.support.tables import read_items


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def spec(request: pytest.FixtureRequest) -> Iterator[TargetSpec]:
    target = parse_target(request.getfixturevalue(f"{request.param}_url"), f"redrive_{uuid.uuid4().hex[:8]}")
    yield target
    drop_target_tables(target)


def letters(spec: TargetSpec) -> list[tuple[str, str]]:
    relation = TableWriter(spec).dialect.relation(DEADLETTERS_SUFFIX)
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")
    return sorted(run_sql(spec, f"SELECT sequence_number, reason FROM {relation}")[1])


def test_redrive_applies_what_now_applies_and_keeps_the_rest(spec: TargetSpec) -> None:
    sink = TableWriter(spec)
    try:
        sink.apply([change("INSERT", "current", 50, 1, v="newest")])
        # Records that failed earlier (say the database refused them until a column was widened), as the relay
        # stored them: the raw record, the reason, its shard and sequence number.
        failed = {
            "10": cdc_record("INSERT", "fixed-a", T0 + 10, v="a"),
            "11": cdc_record("MODIFY", "fixed-b", T0 + 11, v="b"),
            "12": cdc_record("MODIFY", "current", T0 + 12, v="older than the row"),  # must not regress it
        }
        sink.dead_letter(
            [
                DeadLetter(json.dumps(record), "rejected earlier", "shardId-000000000000", seq)
                for seq, record in failed.items()
            ]
            + [DeadLetter("{still not json", "undecodable: not JSON", "shardId-000000000000", "13")]
        )
    finally:
        sink.close()

    result = CliRunner().invoke(
        cli,
        [
            "redrive",
            "--target",
            spec.url.render_as_string(hide_password=False) + (f"/{spec.schema}" if spec.dialect == "cratedb" else ""),
            "--table",
            spec.qualified_table,
        ],
    )
    assert result.exit_code == 1, result.output  # one record failed again
    assert result.stderr.strip().endswith("3 applied and removed, 1 failed again (kept, with today's reason)")
    items = read_items(spec, {"id": "S"})
    assert {key: item.get("v") for key, item in items.items()} == {
        '{"id":"current"}': "newest",
        '{"id":"fixed-a"}': "a",
        '{"id":"fixed-b"}': "b",
    }
    (remaining,) = letters(spec)
    assert remaining[0] == "13" and remaining[1].startswith("undecodable: not JSON")
