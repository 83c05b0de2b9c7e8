"""Every read the apply relies on is a real-time primary-key Get on CrateDB: EXPLAIN on the real server says so.

The statements are not listed by hand: a writer applies batches larger than its read chunks (so the largest chunk
of every shape is emitted) on a single and a composite key, while every statement it sends is recorded. Then each
recorded SELECT, and the WHERE clause of each recorded DELETE (EXPLAIN does not take DELETE), is explained with the
parameters it was sent with. A Collect would see only the last refresh.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from kcl_relay.cdc.event import KeyType
from kcl_relay.sink.cratedb import CrateDBDialect, CrateDBDriver
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import parse_target
from kcl_relay.sink.writer import TableWriter
from tests.support.sink_suite import keyed

pytestmark = pytest.mark.cratedb
SUFFIXES = (TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX)

# Reads the apply does not need to see the latest writes for: information_schema is answered from the cluster
# state (always current), and the tombstone purge deletes what is older than a day, long refreshed.
EXEMPT = (
    # Catalog lookups when a writer sets its table up (which tables exist, their column types), not row reads.
    "SELECT column_name, data_type FROM information_schema.columns",
    "SELECT table_name FROM information_schema.tables",
    "DELETE FROM {tombstones} WHERE deleted_at < ?",
)


class RecordingDriver(CrateDBDriver):
    def __init__(self, sent: list[tuple[str, list[Any]]]) -> None:
        self.sent = sent

    def fetch(self, cursor: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        self.sent.append((sql, list(params)))
        return super().fetch(cursor, sql, params)

    def run_many(self, cursor: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> Any:
        if sql.startswith("DELETE"):
            self.sent.extend((sql, list(row)) for row in rows[:1])
        return super().run_many(cursor, sql, rows)


class RecordingDialect(CrateDBDialect):
    def __init__(self, schema: str | None, table: str) -> None:
        super().__init__(schema, table)
        self.sent: list[tuple[str, list[Any]]] = []
        self.driver = RecordingDriver(self.sent)  # type: ignore[misc]  # this instance's, not the class's


def plan(cursor: Any, sql: str, params: list[Any]) -> str:
    cursor.execute(f"EXPLAIN {sql}", params)
    return str(cursor.fetchall()[0][0])


@pytest.fixture
def crate_cursor(cratedb_url: str) -> Iterator[Any]:
    from crate import client

    spec = parse_target(cratedb_url, "x")
    connection = client.connect(f"http://{spec.url.host}:{spec.url.port}", username=spec.url.username)
    yield connection.cursor()
    connection.close()


@pytest.mark.parametrize(
    "key_types",
    [{"id": "S"}, {"customer": "S", "order": "N"}, {"blob": "B", "name": "S"}],
    ids=["single", "composite-S-N", "composite-B-S"],
)
def test_every_read_of_the_apply_is_a_get(cratedb_url: str, crate_cursor: Any, key_types: dict[str, KeyType]) -> None:
    table = "plans_" + "_".join(key_types)
    spec = parse_target(cratedb_url, table)
    dialect = RecordingDialect(spec.schema, spec.table)
    drop = [f"DROP TABLE IF EXISTS {dialect.relation(suffix)}" for suffix in ("", *SUFFIXES)]
    for statement in drop:  # a table left by an earlier run would turn the batches below into no-ops
        crate_cursor.execute(statement)
    sink = TableWriter(spec, dialect=dialect)
    try:
        # two full chunks of the largest read and a short one
        keys = 2 * max(dialect.keys_per_read(sorted(key_types)), dialect.keys_per_read(["key_id"])) + 7
        sink.apply([keyed(key_types, n, "INSERT", 1, n + 1, v=n) for n in range(keys)])
        sink.apply([keyed(key_types, n, "MODIFY", 2, 1000 + n, v=-n) for n in range(0, keys, 2)])
        sink.apply([keyed(key_types, n, "REMOVE", 3, 2000 + n) for n in range(1, keys, 2)])
        sink.apply([keyed(key_types, n, "INSERT", 2, 3000 + n, v=0) for n in range(1, keys, 2)])  # late, stale
    finally:
        sink.close()
    tombstones = dialect.relation("__tombstones")
    exempt = {statement.format(tombstones=tombstones) for statement in EXEMPT}
    shapes: dict[str, list[Any]] = {}
    for sql, params in dialect.sent:
        shape = re.sub(r"\s+", " ", sql)
        if not any(shape.startswith(prefix) for prefix in exempt):
            shapes.setdefault(shape, params)  # the first of each shape

    def largest(prefix: str) -> int:
        return max((shape.count(" OR ") + 1 for shape in shapes if shape.startswith(prefix)), default=0)

    # The largest chunk of each read was exercised: row states and tombstones.
    assert largest("SELECT pk[") == dialect.keys_per_read(sorted(key_types))
    assert largest("SELECT key_id") == dialect.keys_per_read(["key_id"])
    assert any(shape.startswith("DELETE") for shape in shapes)
    not_get = {}
    for shape, params in shapes.items():
        select = shape if shape.startswith("SELECT") else "SELECT 1 FROM" + shape.removeprefix("DELETE FROM")
        explained = plan(crate_cursor, select, params)
        if not explained.startswith("Get["):
            not_get[shape[:120]] = explained[:120]
    for statement in drop:  # a shared CrateDB holds 1,000 shards in all
        crate_cursor.execute(statement)
    assert not not_get, not_get
    print(f"\n{len(shapes)} statement shapes, all Get")


def test_composite_keys_are_get_up_to_98_keys_and_the_chunk_stays_below(crate_cursor: Any, cratedb_url: str) -> None:
    """CrateDB plans 98 OR-ed key conjunctions as a Get and 99 as a Collect: the composite chunk (chosen for speed)
    must stay within that limit; single keys stay Get far beyond their chunk."""
    spec = parse_target(cratedb_url, "plans_limit")
    dialect = CrateDBDialect(spec.schema, spec.table)
    crate_cursor.execute(dialect.create_tables({"a": "S", "b": "S"})[0])
    names = ["a", "b"]
    at_limit = plan(crate_cursor, dialect.state_sql(names, 98), [str(i) for i in range(2 * 98)])
    beyond = plan(crate_cursor, dialect.state_sql(names, 99), [str(i) for i in range(2 * 99)])
    assert at_limit.startswith("Get["), at_limit[:100]
    assert beyond.startswith("Collect["), beyond[:100]
    assert dialect.keys_per_read(names) <= 98
    single_key = CrateDBDialect(spec.schema, "plans_limit_single")
    crate_cursor.execute(single_key.create_tables({"a": "S"})[0])
    count = 3 * single_key.keys_per_read(["a"])
    assert plan(crate_cursor, single_key.state_sql(["a"], count), [str(i) for i in range(count)]).startswith("Get[")
