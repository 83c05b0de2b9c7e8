"""The sink semantics against a real CrateDB: the session's node started from the release tarball, or the server at
CRATEDB_SQLALCHEMY_URL.

The writers under test create their tables with refresh disabled (refresh_interval = 0): a query planned as a
Collect then sees none of the rows written since the table was created, instead of missing them only now and then
within the default one-second refresh. So any read the apply relies on that is not a real-time primary-key Get
fails these tests every time. The tests' own reads refresh explicitly; the relay never does.

CrateDB stores numeric key attributes as exact text, and sends through its driver only what JSON carries exactly
(see kcl_relay/sink/cratedb.py), so the expected items are normalised the same way before comparing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import pytest

from kcl_relay.cdc.event import Item, KeyType
from kcl_relay.cdc.layout import split
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.cratedb import CrateDBDialect, _doubles, _verbatim, key_text
from kcl_relay.sink.dialect import Dialect
from kcl_relay.sink.reader import LIVE
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import TableWriter
from tests.support.sink_suite import SinkSemantics, merge

pytestmark = pytest.mark.cratedb

NO_REFRESH = " WITH (refresh_interval = 0)"


class NoRefreshCrateDBDialect(CrateDBDialect):
    """CrateDB's dialect with every table created unrefreshed: only real-time Gets see what was written."""

    def create_tables(self, key_types: Mapping[str, KeyType]) -> list[str]:
        return [statement + NO_REFRESH for statement in super().create_tables(key_types)]

    def create_dead_letter_table(self) -> str:
        return super().create_dead_letter_table() + NO_REFRESH


class TestCrateDBSink(SinkSemantics):
    @pytest.fixture
    def target_url(self, cratedb_url: str) -> str:
        return cratedb_url

    def make_dialect(self, spec: TargetSpec) -> Dialect | None:
        return NoRefreshCrateDBDialect(spec.schema, spec.table)

    def refresh(self, spec: TargetSpec, relation: str) -> None:
        run_sql(spec, f"REFRESH TABLE {relation}")  # test reads only: the relay never refreshes

    def read(self, spec: TargetSpec) -> dict[Hashable, Item]:
        relation = f'"{spec.schema}"."{spec.table}"'
        self.refresh(spec, relation)
        _, rows = run_sql(spec, f"SELECT pk, data, aux FROM {relation} WHERE {LIVE}")
        return {tuple(pk[name] for name in sorted(pk)): merge(pk, data or {}, aux or {}) for pk, data, aux in rows}

    def expected(self, items: Mapping[str, Item], key_names: Sequence[str]) -> dict[Hashable, Item]:
        result: dict[Hashable, Item] = {}
        for image in items.values():
            key = {name: image[name] for name in key_names}
            row = split(key, image)
            pk = {name: key_text(value) for name, value in key.items()}
            result[tuple(pk[name] for name in sorted(pk))] = merge(pk, _doubles(row.data), _verbatim(row.aux))
        return result

    def poison(self, sink: TableWriter, spec: TargetSpec) -> tuple[str, dict[str, object]]:
        # With the aux fallback, CrateDB stores every value DynamoDB can hold; a key beyond Lucene's 32,766-byte term
        # limit is what the server itself still refuses ("Document contains at least one immense term").
        return "k" * 40_000, {"v": 3}


def test_no_refresh_tables_really_hide_unrefreshed_rows(cratedb_url: str) -> None:
    """The premise of the suite above: on a table created with refresh_interval = 0, a Collect sees nothing that
    was written since, while a Get does."""
    from kcl_relay.sink.target import parse_target

    spec = parse_target(cratedb_url, "t_premise")
    relation = f'"{spec.schema}"."t_premise"'
    run_sql(spec, f"DROP TABLE IF EXISTS {relation}")
    run_sql(spec, f"CREATE TABLE {relation} (id TEXT PRIMARY KEY, v INT){NO_REFRESH}")
    try:
        run_sql(spec, f"INSERT INTO {relation} (id, v) VALUES ('a', 1)")
        assert run_sql(spec, f"SELECT count(*) FROM {relation}")[1] == [(0,)]  # Collect: not refreshed
        assert run_sql(spec, f"SELECT v FROM {relation} WHERE id = 'a'")[1] == [(1,)]  # Get: real time
    finally:
        run_sql(spec, f"DROP TABLE IF EXISTS {relation}")
