"""The types CrateDB fixed for the sub-columns of `data`, and which attributes still fit them.

`data` is OBJECT(DYNAMIC): the first value stored at a path creates a typed sub-column, and later values are cast
to that type without a word when CrateDB can (seen on CrateDB 6.4: 5 into TEXT becomes '5', true becomes 't', 1.5
into BIGINT becomes 1, "42" into BIGINT becomes 42, 2**60 into DOUBLE loses digits). Only casts that fail are
refused. So before a row is written, each of its `data` attributes is checked against the known types: one that
would be cast, anywhere inside it, goes to `aux` (OBJECT(IGNORED), stored as is), intact; the others stay queryable.

A path no row has used yet is assumed to get the type of the first value this writer sends there, and later rows
of the batch must agree. Another worker may create the same path with another type at the same moment; so after a
batch that assumed new paths the writer reads the real types back (information_schema) and rewrites the rows whose
attributes no longer fit (tests/integration/test_cratedb_behaviour.py).

A row that creates sub-columns (any new path, even one holding only null, [] or {}) must be written in a statement of
its own: CrateDB 6.4.3 loses the object values of the ON CONFLICT updates that follow a dynamic mapping update within
one shard's part of a bulk request (they become NULL, or keep their old value while the other columns change). Rows
that only use known paths are safe in bulk, even while other requests add columns. Seen and pinned by
test_cratedb_behaviour.py::test_bulk_upsert_after_a_mapping_update_loses_object_values.

A type is a string ("text", "bigint", "double", "boolean", "undefined" for a path only null was stored at, "other"
for anything else, e.g. a column a user declared), a dict of child types (an object), or an ArrayOf.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Union

from kcl_relay.cdc.layout import Row

__all__ = ["ArrayOf", "DataTypes", "parse_column_types"]

ColumnType = Union[str, dict[str, "ColumnType"], "ArrayOf"]
EXACT_DOUBLE = 2**53  # integers a DOUBLE column holds exactly
_SCALARS = {"text": "text", "bigint": "bigint", "double precision": "double", "boolean": "boolean"}
_SEGMENT = re.compile(r"\['((?:[^']|'')*)'\]")


@dataclass(frozen=True)
class ArrayOf:
    element: ColumnType


class _Clash(Exception):
    """A value that CrateDB would cast (or refuse) at its path."""


def _scalar(data_type: str) -> ColumnType:
    if data_type == "object":
        return {}
    if data_type.endswith("_array"):
        return ArrayOf(_scalar(data_type[: -len("_array")]))
    if data_type == "undefined":
        return "undefined"
    return _SCALARS.get(data_type, "other")


def parse_column_types(records: Iterable[Sequence[Any]], column: str = "data") -> dict[str, ColumnType]:
    """information_schema rows (column_name, data_type) -> the type tree below `column`."""
    tree: dict[str, ColumnType] = {}
    prefix = f"{column}["
    rows = sorted((str(name), str(kind)) for name, kind in records if str(name).startswith(prefix))
    for name, data_type in sorted(rows, key=lambda row: row[0].count("[")):  # parents before children
        path = [segment.replace("''", "'") for segment in _SEGMENT.findall(name[len(column) :])]
        parent: Any = tree
        for segment in path[:-1]:
            node = parent.get(segment)
            while isinstance(node, ArrayOf):  # sub-columns of an object array describe its elements
                node = node.element
            if not isinstance(node, dict):
                break
            parent = node
        else:
            if path:
                parent[path[-1]] = _scalar(data_type)
    return tree


def _kind(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, (float, Decimal)):  # layout.split lets through only Decimals a DOUBLE holds exactly
        return "double"
    if isinstance(value, str):
        return "text"
    raise _Clash


def _fit(value: Any, known: ColumnType | None) -> ColumnType | None:
    """The type at this path once `value` is stored there; raises _Clash when CrateDB would alter it.
    Returns `known` itself when the value adds nothing, so unchanged trees are not copied."""
    if value is None:
        return "undefined" if known is None else known  # even a null creates a sub-column
    if known == "undefined":
        known = None
    if isinstance(value, dict):
        if known is None:
            known = {}
        if not isinstance(known, dict):
            raise _Clash
        grown = known
        for name, child in value.items():
            current = known.get(name)
            fitted = _fit(child, current)
            if fitted is not current:
                if grown is known:
                    grown = dict(known)
                grown[name] = fitted  # type: ignore[assignment]
        return grown
    if isinstance(value, list):
        if known is None:
            known = ArrayOf("undefined")
        if not isinstance(known, ArrayOf):
            raise _Clash
        element: ColumnType | None = known.element
        for item in value:
            element = _fit(item, element)
        return known if element is known.element else ArrayOf(element)
    kind = _kind(value)
    if known is None or known == kind:
        return kind if known is None else known
    if known == "double" and kind == "bigint" and -EXACT_DOUBLE <= value <= EXACT_DOUBLE:
        return known  # stored as the same number
    raise _Clash


class DataTypes:
    """What this writer knows (or has assumed) about the types below `data`."""

    def __init__(self) -> None:
        self.known: dict[str, ColumnType] = {}
        self.loaded = False
        self.assumed = False  # paths were assumed since the types were last read from the table

    def learn(self, records: Iterable[Sequence[Any]]) -> None:
        self.known = parse_column_types(records)
        self.loaded = True
        self.assumed = False

    def fit(self, row: Row) -> tuple[Row, bool]:
        """The row with every `data` attribute that would not keep its type moved to `aux`, and whether it creates
        sub-columns (then it must be written alone, see above); the paths it adds are assumed from here on."""
        moved: dict[str, Any] = {}
        grows = False
        for name, value in row.data.items():
            current = self.known.get(name)
            try:
                fitted = _fit(value, current)
            except _Clash:
                moved[name] = value
                continue
            if fitted is not current:
                self.known[name] = fitted  # type: ignore[assignment]  # never None: value or known is set
                self.assumed = grows = True
        if not moved:
            return row, grows
        data = {name: value for name, value in row.data.items() if name not in moved}
        return Row(pk=row.pk, data=data, aux={**row.aux, **moved}), grows
