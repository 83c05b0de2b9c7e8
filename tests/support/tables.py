"""Read a target table back as items, the way end-to-end tests compare it with DynamoDB."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kcl_relay.cdc.event import Item, KeyType, canonical_key
from kcl_relay.cdc.jsonenc import loads
from kcl_relay.cdc.values import parse_number
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.cratedb import CrateDBDialect
from kcl_relay.sink.reader import TargetReader
from kcl_relay.sink.target import TargetSpec

# A mapping's [columns] for the attributes of the items kcl_relay.localaws.workload writes (fill_table, run_workload),
# for the tests that relay or load them with a mapping (kcl_relay/mapping).
WORKLOAD_COLUMNS = """
[columns]
name = { path = "name", type = "TEXT" }
amount = { path = "amount", type = "NUMERIC(38, 10)" }
active = { path = "active", type = "BOOLEAN" }
title = { path = "doc.title", type = "TEXT" }
level = { path = "doc.nested.level", type = "BIGINT" }
tags = { path = "tags", type = "ARRAY(TEXT)" }
version = { path = "version", type = "BIGINT" }
"""


def relation(spec: TargetSpec, suffix: str = "") -> str:
    table = f'"{spec.table}{suffix}"'
    return f'"{spec.schema}".{table}' if spec.schema else table


def reader_items(spec: TargetSpec, key_types: Mapping[str, KeyType]) -> dict[str, Item]:
    """{key id: item} as the relay's own reader gives the table back (a mapping's columns put back at their paths)."""
    reader = TargetReader(spec, key_types)
    try:
        return {row.key_id: row.item for row in reader.rows()}
    finally:
        reader.close()


def read_items(spec: TargetSpec, key_types: dict[str, str], live_only: bool = False) -> dict[str, Item]:
    """{canonical key: pk | data | aux}. Exact JSON on SQLite and PostgreSQL; CrateDB returns what its driver gives.
    `live_only`: without the rows delete-mode=soft keeps for removed items (the relay's tables only)."""
    if spec.dialect == "postgresql":
        sql = f"SELECT pk::text, data::text, aux::text FROM {relation(spec)}"
    else:
        sql = f"SELECT pk, data, aux FROM {relation(spec)}"
    if live_only:
        sql += " WHERE cdc_event <> 'REMOVE'"
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation(spec)}")
    _, rows = run_sql(spec, sql)
    items: dict[str, Item] = {}
    for pk, data, aux in rows:
        pk, data, aux = (loads(part) if isinstance(part, str) else (part or {}) for part in (pk, data, aux))
        if spec.dialect == "cratedb":  # numeric keys are TEXT there; aux's marks undone (big numbers, names)
            aux = CrateDBDialect(spec.schema, spec.table).load_document(aux, "aux")
            pk = {
                name: parse_number(value) if key_types[name] == "N" and isinstance(value, str) else value
                for name, value in pk.items()
            }
        items[canonical_key(pk)] = {**pk, **data, **aux}
    return items


def same_value(expected: Any, got: Any) -> bool:
    """Equality that lets CrateDB's driver turn exact numbers into floats or decimal text."""
    if isinstance(expected, dict) and isinstance(got, dict):
        return expected.keys() == got.keys() and all(same_value(expected[k], got[k]) for k in expected)
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(same_value(e, g) for e, g in zip(expected, got, strict=True))
    if isinstance(expected, (int, Decimal)) and not isinstance(expected, bool):
        if isinstance(got, float):
            return float(expected) == got
        if isinstance(got, str):
            return Decimal(got) == expected
    return expected == got
