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

What a transaction attempt assumes stays in an overlay (begin() starts one) and joins `known` only when the write
succeeded (commit()). An attempt that fails leaves nothing behind: its retry sees the new paths as new again, so the
rows that create them are still written alone (see above), whatever the first attempt got done.

A table holds at most `mapping.total_fields.limit` columns (1000 by default), every path of every object counted
(information_schema.columns lists exactly those). The writer knows the count and the limit from the same read, and
an attribute whose new sub-columns would pass the limit goes to `aux` before the row is sent: a wide table then
costs no failed statement per row. The count may fall short of the truth when other workers add columns at the same
time; CrateDB then rejects the row, and the writer stores all of its attributes in aux (writer.py, step 3;
strategy/optimistic.py).

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

__all__ = ["LIMIT_ROW", "ArrayOf", "DataTypes", "parse_column_types"]

ColumnType = Union[str, dict[str, "ColumnType"], "ArrayOf"]
EXACT_DOUBLE = 2**53  # integers a DOUBLE column holds exactly
LIMIT_ROW = "#limit"  # the pseudo column name under which the column types read carries the table's column limit
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


def _fit(value: Any, known: ColumnType | None) -> ColumnType:
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
                grown[name] = fitted
        return grown
    if isinstance(value, list):
        if known is None:
            known = ArrayOf("undefined")
        if not isinstance(known, ArrayOf):
            raise _Clash
        element: ColumnType = known.element
        for item in value:
            element = _fit(item, element)
        return known if element is known.element else ArrayOf(element)
    kind = _kind(value)
    if known is None or known == kind:
        return kind if known is None else known
    if known == "double" and kind == "bigint" and -EXACT_DOUBLE <= value <= EXACT_DOUBLE:
        return known  # stored as the same number
    raise _Clash


def _columns(kind: ColumnType | None) -> int:
    """How many columns a path of this type is: itself and, for objects, every path below it."""
    if kind is None:
        return 0
    if isinstance(kind, ArrayOf):  # an array is one column; of objects, its elements' sub-columns besides
        return _columns(kind.element)
    if isinstance(kind, dict):
        return 1 + sum(_columns(child) for child in kind.values())
    return 1


class DataTypes:
    """What this writer knows (or has assumed, within one attempt) about the types below `data`, and how many
    columns the table has of how many it may have."""

    def __init__(self) -> None:
        self.known: dict[str, ColumnType] = {}
        self.loaded = False
        self.assumed = False  # the current attempt assumed paths not read from the table
        self.columns = 0  # the table's columns, every sub-column counted, as last read
        self.limit: int | None = None  # mapping.total_fields.limit; None: not known
        self._overlay: dict[str, ColumnType] = {}  # top-level attributes' types as the current attempt grew them
        self._added = 0  # columns the current attempt's assumed paths add

    def learn(self, records: Iterable[Sequence[Any]]) -> None:
        """Rows (column_name, data_type) of every column of the table, and optionally ("#limit", limit)."""
        rows = [(str(name), str(kind)) for name, kind in records]
        self.known = parse_column_types(rows)
        self.columns = sum(1 for name, _ in rows if not name.startswith("#"))
        limits = [int(kind) for name, kind in rows if name == LIMIT_ROW and kind.isdigit()]
        self.limit = limits[0] if limits else None
        self.loaded = True
        self.begin()

    def begin(self) -> None:
        """A new attempt: forget what a failed one assumed."""
        self._overlay = {}
        self._added = 0
        self.assumed = False

    def commit(self) -> None:
        """The attempt's writes succeeded: what it assumed is known from now on."""
        self.known.update(self._overlay)
        self.columns += self._added
        self._overlay = {}
        self._added = 0

    def type_of(self, name: str) -> ColumnType | None:
        return self._overlay.get(name, self.known.get(name))

    def fit(self, row: Row) -> tuple[Row, bool]:
        """The row with every `data` attribute that would not keep its type moved to `aux`, and whether it creates
        sub-columns (then it must be written alone, see above); the paths it adds are assumed for the rest of the
        attempt. So is an attribute whose new sub-columns would pass the table's column limit."""
        moved: dict[str, Any] = {}
        grows = False
        for name, value in row.data.items():
            current = self.type_of(name)
            try:
                fitted = _fit(value, current)
            except _Clash:
                moved[name] = value
                continue
            if fitted is not current:
                added = _columns(fitted) - _columns(current)
                if self.limit is not None and self.columns + self._added + added > self.limit:
                    moved[name] = value
                    continue
                self._overlay[name] = fitted
                self._added += added
                self.assumed = grows = True
        if not moved:
            return row, grows
        data = {name: value for name, value in row.data.items() if name not in moved}
        return Row(pk=row.pk, data=data, aux={**row.aux, **moved}), grows
