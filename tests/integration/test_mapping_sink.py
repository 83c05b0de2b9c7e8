"""A mapped target table on every database: typed columns created and added, changes refused, misfits counted,
the mapping kept beside the table for whoever writes or reads it next (redrive, full load, verify, show table).

The rest of the sink semantics with a mapping: tests/support/sink_suite.py runs each of its tests plain and mapped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from kcl_relay.mapping.spec import MappingError, parse_mapping
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.reader import comparable
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter, dialect_for
from tests.support.sink_suite import KEY_TYPES, change
from tests.support.tables import reader_items

ORDERS = """
[columns]
ordered_at = { path = "orderedAt", type = "TIMESTAMP" }
amount = { path = "total.amount", type = "NUMERIC(38, 2)" }
qty = { path = "qty", type = "BIGINT" }
"""
MORE = ORDERS + 'paid = { path = "paid", type = "BOOLEAN" }\n'


@pytest.fixture(params=["sqlite", "postgresql", pytest.param("cratedb", marks=pytest.mark.cratedb)])
def spec(request: pytest.FixtureRequest) -> Iterator[TargetSpec]:
    url = request.getfixturevalue(
        {"sqlite": "sqlite_url", "postgresql": "postgres_url"}.get(request.param, "cratedb_url")
    )
    spec = parse_target(url, f"m_{uuid.uuid4().hex[:12]}")
    yield spec
    dialect = dialect_for(spec)
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        engine = spec.create_engine()
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {dialect.relation(suffix)}")
        finally:
            engine.dispose()


def _items(spec: TargetSpec) -> dict[str, Any]:
    return reader_items(spec, KEY_TYPES)


def _column(spec: TargetSpec, column: str, ident: str) -> Any:
    relation = dialect_for(spec).relation()
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")
        where = f"pk['id'] = '{ident}'"
    else:
        where = f'pk = \'{{"id":"{ident}"}}\'' + ("::jsonb" if spec.dialect == "postgresql" else "")
    return run_sql(spec, f'SELECT "{column}" FROM {relation} WHERE {where}')[1][0][0]


def _writer(spec: TargetSpec, text: str | None) -> TableWriter:
    return TableWriter(spec, mapping=parse_mapping(text).default if text else None)


def test_typed_columns_hold_what_fits_and_aux_the_rest_and_the_item_reads_back_whole(spec: TargetSpec) -> None:
    sink = _writer(spec, ORDERS)
    good = {"orderedAt": "2026-11-27T10:00:00.250Z", "total": {"amount": Decimal("19.99"), "cur": "EUR"}, "qty": 3}
    odd = {"orderedAt": "yesterday", "total": {"amount": Decimal("0.001")}, "qty": "three"}
    try:
        result = sink.apply([change("INSERT", "a", 1, 1, **good), change("INSERT", "b", 1, 2, **odd)])
        assert (result.upserted, result.misfits, result.dead_letters) == (2, 3, [])
    finally:
        sink.close()
    assert _column(spec, "qty", "a") == 3 and _column(spec, "qty", "b") is None  # never a silent value
    assert Decimal(str(_column(spec, "amount", "a"))) == Decimal("19.99")
    relation = dialect_for(spec).relation()
    data = run_sql(spec, f"SELECT data FROM {relation}")[1]
    assert all("qty" not in str(row[0]) for row in data)  # a mapped attribute is in its column only
    assert _items(spec) == {
        '{"id":"a"}': comparable({"id": "a", **good}),
        '{"id":"b"}': comparable({"id": "b", **odd}),
    }


def test_an_added_column_alters_the_table_a_changed_one_is_refused_and_none_is_dropped(spec: TargetSpec) -> None:
    plain = _writer(spec, None)
    try:
        plain.apply([change("INSERT", "old", 1, 1, qty=1, paid=True)])  # before any mapping: in data
    finally:
        plain.close()
    for text in (ORDERS, MORE):
        sink = _writer(spec, text)
        try:
            sink.apply([change("INSERT", f"n{len(text)}", 2, 2, qty=2, paid=False)])
        finally:
            sink.close()
    assert _column(spec, "paid", f"n{len(MORE)}") in (False, 0)
    assert _items(spec) == {
        '{"id":"old"}': {"id": "old", "qty": 1, "paid": True},
        f'{{"id":"n{len(ORDERS)}"}}': {"id": f"n{len(ORDERS)}", "qty": 2, "paid": False},
        f'{{"id":"n{len(MORE)}"}}': {"id": f"n{len(MORE)}", "qty": 2, "paid": False},
    }
    for text, says in [
        (MORE.replace('"BIGINT"', '"TEXT"'), "column qty of"),
        (ORDERS.replace('qty = { path = "qty", type = "BIGINT" }\n', "") + 'paid = { path = "paid", type = "BOOLEAN" }',
         "never drops a column"),
    ]:  # fmt: skip
        sink = _writer(spec, text)
        try:
            with pytest.raises(MappingError) as caught:
                sink.apply([change("INSERT", "z", 3, 3, qty=1)])
            assert says in str(caught.value) and "\n" not in str(caught.value)
        finally:
            sink.close()
    # Started without mapping= (a redrive, a full load): the table's own mapping shapes the rows.
    sink = _writer(spec, None)
    try:
        assert sink.apply([change("INSERT", "late", 4, 4, qty=9)]).upserted == 1
        assert sink.mapping is not None and [c.name for c in sink.mapping.columns][-1] == "paid"
    finally:
        sink.close()
    assert _column(spec, "qty", "late") == 9


def test_crate_table_options_at_create(spec: TargetSpec) -> None:
    if spec.dialect != "cratedb":
        pytest.skip("shards, replicas and refresh-interval are CrateDB's table settings")
    text = ORDERS + '\n[table]\nshards = 3\nreplicas = "0-1"\nrefresh-interval = 3\n'
    sink = _writer(spec, text)
    try:
        sink.apply([change("INSERT", "a", 1, 1, qty=1)])
    finally:
        sink.close()
    rows = run_sql(
        spec,
        "SELECT number_of_shards, number_of_replicas, settings['refresh_interval'] FROM information_schema.tables "
        f"WHERE table_schema = '{spec.schema}' AND table_name = '{spec.table}'",
    )[1]
    assert rows == [[3, "0-1", 3000]] or rows == [(3, "0-1", 3000)]


def test_a_relay_refuses_a_changed_mapping_before_the_worker_starts(spec: TargetSpec, tmp_path: Any) -> None:
    from kcl_relay.relay import check_target_mapping
    from kcl_relay.source.url import SourceError, SourceSpec

    same, changed, more = tmp_path / "same.toml", tmp_path / "changed.toml", tmp_path / "more.toml"
    same.write_text(ORDERS)
    changed.write_text(ORDERS.replace('"NUMERIC(38, 2)"', '"DOUBLE"'))
    more.write_text(MORE)
    sink = _writer(spec, ORDERS)
    try:
        sink.apply([change("INSERT", "a", 1, 1, qty=1)])
    finally:
        sink.close()
    check_target_mapping(SourceSpec(stream="s", mapping=str(same)), spec)
    check_target_mapping(SourceSpec(stream="s", mapping=str(more)), spec)  # adds a column: fine
    with pytest.raises(SourceError) as caught:
        check_target_mapping(SourceSpec(stream="s", mapping=str(changed)), spec)
    assert str(caught.value).startswith("column amount of ") and "give the new mapping a new column name" in str(
        caught.value
    )
