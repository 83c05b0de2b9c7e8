"""What the relay's start-up guard sees of a target table: missing, empty, or holding rows (every dialect)."""

from __future__ import annotations

import time
import uuid

import pytest

from kcl_relay.sink.admin import run_sql, table_state
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter
from tests.support.sink_suite import KEY_SCHEMAS, change


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def spec(request: pytest.FixtureRequest) -> TargetSpec:
    return parse_target(request.getfixturevalue(f"{request.param}_url"), f"state_{uuid.uuid4().hex[:8]}")


def test_missing_empty_rows(spec: TargetSpec) -> None:
    assert table_state(spec) == "missing"
    writer = TableWriter(spec)
    try:
        writer.ensure_table(KEY_SCHEMAS["S"])
        assert table_state(spec) == "empty"
        writer.apply([change("INSERT", "1", 1, 1)])
    finally:
        writer.close()
    deadline = time.monotonic() + 10  # CrateDB: visible after its periodic refresh (the relay never refreshes)
    while table_state(spec) != "rows" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert table_state(spec) == "rows"
    run_sql(spec, f"DROP TABLE {writer.dialect.relation()}", commit=True)
    assert table_state(spec) == "missing"
