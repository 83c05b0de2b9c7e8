"""A mapping and the table it shapes: stored beside it, compared at every start, columns added, never dropped.

The mapping a table was filled with is kept in the table's `<table>__relay` settings (name "mapping", its
canonical JSON), so verify, redrive, the full load and a relay started without `mapping=` read the rows the way
they were written. A start with a mapping that only adds columns alters the table (ALTER TABLE ... ADD COLUMN);
one that changes a column, drops one or changes include/exclude is refused with one line saying what to do.
"""

from __future__ import annotations

from typing import Any

from kcl_relay.cdc.jsonenc import dumps, loads
from kcl_relay.mapping.spec import Column, MappingError, Partition, TableMapping, parse_type

__all__ = ["MAPPING_SETTING", "added_columns", "from_stored", "stored_text", "update_setting_sql"]

MAPPING_SETTING = "mapping"


def stored_text(mapping: TableMapping) -> str:
    return dumps(mapping.describe())


def from_stored(text: str) -> TableMapping:
    """The mapping as stored beside a table (its shaping part; table options matter only at create)."""
    document = loads(text)
    columns = tuple(
        Column(spec["name"], tuple(spec["path"]), parse_type(spec["type"]), spec.get("from"))
        for spec in document["columns"]
    )
    include = document.get("include")
    stored = document.get("partition")
    partition = None
    if stored is not None:
        column = Column(stored["name"], tuple(stored["path"]), parse_type(stored["type"]), stored.get("from"))
        partition = Partition(column, stored["unit"])
    return TableMapping(
        columns=columns,
        partition=partition,
        include=None if include is None else tuple(tuple(path) for path in include),
        exclude=tuple(tuple(path) for path in document.get("exclude", [])),
    )


def added_columns(table: str, stored: str, mapping: TableMapping) -> list[Column]:
    """The columns `mapping` adds to a table filled with the `stored` mapping; MappingError if it changes or drops
    anything (the relay never drops or retypes a column: rows already written hold the old shape)."""
    before: dict[str, Any] = _by_name(loads(stored))
    now = _by_name(mapping.describe())
    if before.get("partition") != now.get("partition"):
        raise MappingError(
            f"the table {table} was made with partition-by {_partition_text(before)}; the mapping says "
            f"{_partition_text(now)}: a table's partitioning is fixed at create, relay into a new table"
        )
    for name, spec in before["columns"].items():
        if name not in now["columns"]:
            raise MappingError(
                f"the table {table} has the mapped column {name} ({spec['type']} from {'.'.join(spec['path'])}): "
                "keep it in the mapping (the relay never drops a column), or relay into a new table"
            )
        if now["columns"][name] != spec:
            new = now["columns"][name]
            raise MappingError(
                f"column {name} of {table} is {spec['type']} from {'.'.join(spec['path'])}"
                f"{' (' + spec['from'] + ')' if 'from' in spec else ''}; the mapping makes it {new['type']} from "
                f"{'.'.join(new['path'])}{' (' + new['from'] + ')' if 'from' in new else ''}: give the new mapping "
                "a new column name, or relay into a new table"
            )
    for key in ("include", "exclude"):
        if before.get(key) != now[key]:
            raise MappingError(
                f"the table {table} was filled with {key} = {before.get(key)}; the mapping says {now[key]}: keep the "
                "same list, or relay into a new table"
            )
    paths = {tuple(spec["path"]): name for name, spec in before["columns"].items()}
    added = [column for column in mapping.columns if column.name not in before["columns"]]
    for column in added:
        for path, name in paths.items():
            if path[: len(column.path)] == column.path or column.path[: len(path)] == path:
                raise MappingError(
                    f"column {column.name} maps {column.shown_path}, which column {name} of {table} already takes"
                )
    return added


def _partition_text(described: dict[str, Any]) -> str:
    partition = described.get("partition")
    if partition is None:
        return "(none)"
    return f"{partition['unit']}({partition['name']}) of {'.'.join(partition['path'])} ({partition.get('from')})"


def _by_name(described: dict[str, Any]) -> dict[str, Any]:
    columns = {spec["name"]: {k: v for k, v in spec.items() if k != "name"} for spec in described["columns"]}
    return {**described, "columns": columns}


def update_setting_sql(relation: str, param: str) -> str:
    return f"UPDATE {relation} SET value = {param} WHERE name = {param}"
