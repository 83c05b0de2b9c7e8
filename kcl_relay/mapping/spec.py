"""The mapping file (TOML): named, typed top-level columns taken from attribute paths; what to store at all.

    include = ["orderedAt", "total", "tags", "status"]   # optional: store only these paths (and the key)
    exclude = ["total.debug"]                            # optional: never store these

    [columns]
    ordered_at = { path = "orderedAt", type = "TIMESTAMP", from = "iso" }
    amount = { path = "total.amount", type = "NUMERIC(38, 2)" }
    tags = { path = "tags", type = "ARRAY(TEXT)" }

    [table]                                              # optional, used when the relay creates the table
    shards = 6
    replicas = "0-1"
    refresh-interval = 5.0                               # seconds

    [tables.orders.columns]                              # route-tables=true: a section per target table
    ...

Everything is checked when the file is read, before anything starts: a mistake is one MappingError line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "SCALARS",
    "TIME_SOURCES",
    "Column",
    "ColumnType",
    "MappingError",
    "MappingFile",
    "TableMapping",
    "load_mapping",
    "parse_mapping",
    "parse_type",
]

SCALARS = ("TEXT", "BIGINT", "DOUBLE", "NUMERIC", "BOOLEAN", "TIMESTAMP", "OBJECT")
# How a TIMESTAMP column reads its attribute: ISO 8601 text (written back with a fraction only when there are
# milliseconds, or always with three digits), or a number of epoch seconds or milliseconds.
TIME_SOURCES = ("iso", "iso-ms", "epoch-s", "epoch-ms")
DEFAULT_NUMERIC = (38, 10)  # NUMERIC without (precision, scale): CrateDB stores NUMERIC only with both
COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
RESERVED = ("pk", "data", "aux")
_TYPE = re.compile(r"\s*(ARRAY\s*\(\s*)?([A-Z]+)(?:\s*\(\s*(\d+)\s*,\s*(\d+)\s*\))?\s*(\))?\s*", re.IGNORECASE)
_COLUMN_KEYS = ("path", "type", "from")
_TABLE_KEYS = ("shards", "replicas", "refresh-interval", "partition-by")
_SECTION_KEYS = ("columns", "include", "exclude", "table")
_REPLICAS = re.compile(r"\d{1,3}(-(\d{1,3}|all))?")


class MappingError(ValueError):
    """A mapping file that cannot be used: one line, exit 2 before anything starts."""


@dataclass(frozen=True)
class ColumnType:
    base: str  # one of SCALARS
    array: bool = False
    precision: int = 0  # NUMERIC only
    scale: int = 0

    def __str__(self) -> str:
        inner = f"NUMERIC({self.precision}, {self.scale})" if self.base == "NUMERIC" else self.base
        return f"ARRAY({inner})" if self.array else inner


@dataclass(frozen=True)
class Column:
    name: str
    path: tuple[str, ...]
    type: ColumnType
    source: str | None = None  # TIMESTAMP only: one of TIME_SOURCES

    def describe(self) -> dict[str, Any]:
        """What identifies the column in a table (stored beside it, compared on every start)."""
        described: dict[str, Any] = {"path": list(self.path), "type": str(self.type)}
        if self.source:
            described["from"] = self.source
        return described

    @property
    def shown_path(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class TableMapping:
    """The mapping of one target table."""

    columns: tuple[Column, ...] = ()
    include: tuple[tuple[str, ...], ...] | None = None  # None: everything
    exclude: tuple[tuple[str, ...], ...] = ()
    shards: int | None = None
    replicas: str | None = None
    refresh_interval_ms: int | None = None

    def describe(self) -> dict[str, Any]:
        """The stored form (canonical JSON of it lives in the table's `__relay` settings): what shapes rows."""
        return {
            "columns": [{"name": column.name, **column.describe()} for column in self.columns],  # in the file's order
            "include": None if self.include is None else [list(path) for path in self.include],
            "exclude": [list(path) for path in self.exclude],
        }

    @property
    def empty(self) -> bool:
        return not self.columns and self.include is None and not self.exclude

    def check_key(self, key_names: Any) -> None:
        """A key attribute stays in pk: a column or an exclusion of it is a mistake."""
        for column in self.columns:
            if column.path[0] in key_names:
                raise MappingError(f"column {column.name} maps the key attribute {column.path[0]}: the key stays in pk")
        for path in self.exclude:
            if path[0] in key_names:
                raise MappingError(f"exclude names the key attribute {path[0]}: the key is always stored")


@dataclass(frozen=True)
class MappingFile:
    path: str
    default: TableMapping = field(default_factory=TableMapping)
    tables: dict[str, TableMapping] = field(default_factory=dict)

    def for_table(self, table: str) -> TableMapping:
        return self.tables.get(table, self.default)


def load_mapping(path: str | Path) -> MappingFile:
    """Read and check a mapping file; MappingError (one line naming the file) on any mistake."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MappingError(
            f"cannot read the mapping file {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    return parse_mapping(text, str(path))


def parse_mapping(text: str, where: str = "the mapping") -> MappingFile:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MappingError(f"{where}: not valid TOML: {error}") from None
    try:
        tables = document.pop("tables", {})
        if not isinstance(tables, dict) or not all(isinstance(value, dict) for value in tables.values()):
            raise MappingError("[tables.NAME] sections must be tables")
        default = _section(document, "")
        routed = {name: _section(section, f"tables.{name}.") for name, section in tables.items()}
    except MappingError as error:
        raise MappingError(f"{where}: {error}") from None
    return MappingFile(path=where, default=default, tables=routed)


def _section(section: dict[str, Any], prefix: str) -> TableMapping:
    _known(section, _SECTION_KEYS, prefix or "the file's top level")
    columns_table = section.get("columns", {})
    if not isinstance(columns_table, dict):
        raise MappingError(f"{prefix}columns must be a table of NAME = {{ path = ..., type = ... }}")
    columns = tuple(_column(name, spec, prefix) for name, spec in columns_table.items())
    include = None if "include" not in section else _paths(section["include"], f"{prefix}include")
    exclude = _paths(section.get("exclude", []), f"{prefix}exclude")
    _check_paths(columns, include, exclude, prefix)
    table = section.get("table", {})
    if not isinstance(table, dict):
        raise MappingError(f"{prefix}table must be a table of options")
    _known(table, _TABLE_KEYS, f"{prefix}table")
    if "partition-by" in table:
        raise MappingError(
            f"{prefix}table.partition-by is not supported yet: a partition column would have to join the primary "
            "key, which the relay's guarded writes address by pk alone"
        )
    return TableMapping(
        columns=columns,
        include=include,
        exclude=exclude,
        shards=_whole(table, "shards", 1, 1000, prefix),
        replicas=_replicas(table.get("replicas"), prefix),
        refresh_interval_ms=_interval(table.get("refresh-interval"), prefix),
    )


def _known(section: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in section:
        if key not in keys:
            raise MappingError(f"unknown key {key!r} in {where}; valid keys: {', '.join(keys)}")


def parse_type(text: Any) -> ColumnType:
    """'BIGINT', 'NUMERIC(38, 2)', 'ARRAY(TIMESTAMP)' -> ColumnType; MappingError for anything else."""
    if isinstance(text, str) and text.upper().replace(" ", "").startswith("ARRAY(ARRAY"):
        raise MappingError(f"unknown type {text!r}: an ARRAY of ARRAYs is not supported")
    match = _TYPE.fullmatch(text) if isinstance(text, str) else None
    if match is None or bool(match.group(1)) != bool(match.group(5)):
        raise MappingError(f"unknown type {text!r}; types: {', '.join(SCALARS)}, ARRAY(one of these)")
    base = match.group(2).upper()
    if base == "ARRAY":
        raise MappingError(f"unknown type {text!r}: an ARRAY of ARRAYs is not supported")
    if base not in SCALARS:
        raise MappingError(f"unknown type {text!r}; types: {', '.join(SCALARS)}, ARRAY(one of these)")
    precision, scale = (int(match.group(3)), int(match.group(4))) if match.group(3) else (0, 0)
    if match.group(3) and base != "NUMERIC":
        raise MappingError(f"type {text!r}: only NUMERIC takes (precision, scale)")
    if base == "NUMERIC":
        precision, scale = (precision, scale) if match.group(3) else DEFAULT_NUMERIC
        if not (1 <= precision <= 38 and 0 <= scale <= precision):
            raise MappingError(
                f"type {text!r}: NUMERIC(precision, scale) needs 1 <= precision <= 38, scale <= precision"
            )
    return ColumnType(base, bool(match.group(1)), precision, scale)


def _column(name: str, spec: Any, prefix: str) -> Column:
    where = f"column {prefix}{name}"
    if not COLUMN_NAME.fullmatch(name):
        raise MappingError(f"{where}: a column name is 1-63 of a-z 0-9 _, starting with a letter")
    if name in RESERVED or name.startswith("cdc_"):
        raise MappingError(f"{where}: the names pk, data, aux and cdc_* are the relay's own columns")
    if not isinstance(spec, dict):
        raise MappingError(f'{where}: expected {{ path = "a.b", type = "TEXT" }}')
    _known(spec, _COLUMN_KEYS, where)
    if "path" not in spec or "type" not in spec:
        raise MappingError(f"{where}: needs both path and type")
    path = _path(spec["path"], where)
    try:
        kind = parse_type(spec["type"])
    except MappingError as error:
        raise MappingError(f"{where}: {error}") from None
    source = spec.get("from")
    if kind.base == "TIMESTAMP":
        source = "iso" if source is None else source
        if source not in TIME_SOURCES:
            raise MappingError(f"{where}: from = {source!r}; a TIMESTAMP is read from one of {', '.join(TIME_SOURCES)}")
    elif source is not None:
        raise MappingError(f"{where}: from applies to TIMESTAMP columns only")
    return Column(name, path, kind, source)


def _path(value: Any, where: str) -> tuple[str, ...]:
    """'a.b' or ["a.b", "c"] (a list when a name holds a dot) -> names from the item's top level down."""
    if isinstance(value, str):
        names = value.split(".")
    elif isinstance(value, list) and value and all(isinstance(name, str) for name in value):
        names = list(value)
    else:
        raise MappingError(f'{where}: bad path {value!r}; expected "a.b" or a list of names')
    if not all(names):
        raise MappingError(f"{where}: bad path {value!r}: an empty name")
    return tuple(names)


def _paths(value: Any, where: str) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise MappingError(f"{where} must be a list of attribute paths")
    return tuple(_path(item, where) for item in value)


def _prefix(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


def _check_paths(
    columns: tuple[Column, ...],
    include: tuple[tuple[str, ...], ...] | None,
    exclude: tuple[tuple[str, ...], ...],
    prefix: str,
) -> None:
    for index, column in enumerate(columns):
        for other in columns[:index]:
            if _prefix(column.path, other.path):
                raise MappingError(
                    f"columns {prefix}{other.name} and {prefix}{column.name} take overlapping paths "
                    f"({other.shown_path}, {column.shown_path}): an attribute goes to one column"
                )
        if include is not None and not any(column.path[: len(path)] == path for path in include):
            raise MappingError(f"column {prefix}{column.name}: its path {column.shown_path} is not in include")
        if any(_prefix(column.path, path) for path in exclude):
            raise MappingError(f"column {prefix}{column.name}: its path {column.shown_path} is excluded")


def _whole(table: dict[str, Any], key: str, low: int, high: int, prefix: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MappingError(f"{prefix}table.{key} = {value!r}: expected a whole number from {low} to {high}")
    return value


def _replicas(value: Any, prefix: str) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _REPLICAS.fullmatch(text):
        raise MappingError(f'{prefix}table.replicas = {value!r}: expected a number or a range such as "0-1"')
    return text


def _interval(value: Any, prefix: str) -> int | None:
    if value is None:
        return None
    # Whole seconds: CrateDB 6.4.3 refuses a fractional one ("fractional time values are not supported").
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 0 <= value <= 86400:
        raise MappingError(f"{prefix}table.refresh-interval = {value!r}: expected whole seconds from 0 to 86400")
    return round(value * 1000)
