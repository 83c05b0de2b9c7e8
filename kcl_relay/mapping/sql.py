"""The mapped columns in each database: their SQL types, what the driver is sent, how they are read back.

| type | CrateDB | PostgreSQL | SQLite (affinity) |
| TEXT | TEXT | TEXT | TEXT |
| BIGINT | BIGINT | BIGINT | INTEGER |
| DOUBLE | DOUBLE PRECISION | DOUBLE PRECISION | REAL |
| NUMERIC(p, s) | NUMERIC(p, s) | NUMERIC(p, s) | TEXT: the exact decimal text (NUMERIC affinity would round) |
| BOOLEAN | BOOLEAN | BOOLEAN | INTEGER 0 / 1 |
| TIMESTAMP | TIMESTAMP WITH TIME ZONE | TIMESTAMPTZ | TEXT: ISO 8601 UTC with milliseconds |
| OBJECT | OBJECT(DYNAMIC) | JSONB | TEXT: canonical JSON |
| ARRAY(x) | ARRAY(x) | x[] (ARRAY(OBJECT): JSONB) | TEXT: canonical JSON |
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from kcl_relay.cdc.jsonenc import canonical_decimal, dumps, loads
from kcl_relay.mapping.shape import EPOCH, _ms_text
from kcl_relay.mapping.spec import Column, ColumnType, TableMapping

__all__ = [
    "column_sql",
    "column_type",
    "param",
    "partition_columns_sql",
    "placeholder",
    "read_value",
    "select_expression",
    "table_clause",
]

_CRATE = {
    "TEXT": "TEXT",
    "BIGINT": "BIGINT",
    "DOUBLE": "DOUBLE PRECISION",
    "BOOLEAN": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP WITH TIME ZONE",
    "OBJECT": "OBJECT(DYNAMIC)",
}
_POSTGRES = {**_CRATE, "TIMESTAMP": "TIMESTAMPTZ", "OBJECT": "JSONB"}
_SQLITE = {"TEXT": "TEXT", "BIGINT": "INTEGER", "DOUBLE": "REAL", "BOOLEAN": "INTEGER"}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_in_postgres(kind: ColumnType) -> bool:
    return kind.base == "OBJECT"


def column_type(dialect: str, kind: ColumnType) -> str:
    """The column's SQL type in this database."""
    numeric = f"NUMERIC({kind.precision}, {kind.scale})"
    if dialect == "sqlite":
        return "TEXT" if kind.array else _SQLITE.get(kind.base, "TEXT")
    if dialect == "postgresql":
        inner = numeric if kind.base == "NUMERIC" else _POSTGRES[kind.base]
        return inner if not kind.array or _json_in_postgres(kind) else f"{inner}[]"
    inner = numeric if kind.base == "NUMERIC" else _CRATE[kind.base]
    return f"ARRAY({inner})" if kind.array else inner


def column_sql(dialect: str, column: Column) -> str:
    """`"name" TYPE`, for CREATE TABLE and ALTER TABLE ... ADD COLUMN."""
    return f"{_quote(column.name)} {column_type(dialect, column.type)}"


def partition_columns_sql(dialect: str, mapping: TableMapping) -> str:
    """CrateDB's partition-by: the key attribute's TIMESTAMP column and the partition column (in the primary key),
    both generated from pk (a generated column cannot read another). Empty elsewhere and without partition-by."""
    partition = mapping.partition
    if dialect != "cratedb" or partition is None:
        return ""
    column = partition.column
    key = "pk['" + column.path[0].replace("'", "''") + "']"
    if column.source in ("epoch-s", "epoch-ms"):
        moment = f"CAST({key} AS BIGINT)" + (" * 1000" if column.source == "epoch-s" else "")
    else:
        moment = f"CAST({key} AS TIMESTAMP WITH TIME ZONE)"
    kind = column_type(dialect, column.type)
    return (
        f", {_quote(column.name)} {kind} GENERATED ALWAYS AS {moment}, "
        f"{_quote(partition.name)} {kind} GENERATED ALWAYS AS date_trunc('{partition.unit}', {moment}) PRIMARY KEY"
    )


def table_clause(dialect: str, mapping: TableMapping) -> str:
    """What follows CREATE TABLE's column list (CrateDB: partitions, shards and settings); empty elsewhere."""
    if dialect != "cratedb":
        return ""
    clause = f" PARTITIONED BY ({_quote(mapping.partition.name)})" if mapping.partition else ""
    clause += f" CLUSTERED INTO {mapping.shards} SHARDS" if mapping.shards else ""
    settings = []
    if mapping.replicas is not None:
        settings.append(f"number_of_replicas = '{mapping.replicas}'")
    if mapping.refresh_interval_ms is not None:
        settings.append(f"refresh_interval = {mapping.refresh_interval_ms}")
    return clause + (f" WITH ({', '.join(settings)})" if settings else "")


def placeholder(dialect: str, column: Column) -> str:
    if dialect == "postgresql":  # typed, so that an empty array or a NULL needs no guess
        return f"%s::{column_type(dialect, column.type)}"
    return "?"


def _ms_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def _param_scalar(dialect: str, kind: ColumnType, value: Any) -> Any:
    if value is None:
        return None
    base = kind.base
    if base == "NUMERIC":
        number = canonical_decimal(value)
        return str(number) if dialect != "postgresql" else Decimal(number)
    if base == "TIMESTAMP":
        if dialect == "postgresql":
            return _ms_datetime(value)
        return _ms_text(value, True) if dialect == "sqlite" else value
    if base == "BOOLEAN" and dialect == "sqlite":
        return int(value)
    if base == "OBJECT" and dialect == "cratedb":
        from kcl_relay.sink.cratedb import _doubles

        return _doubles(value)
    return value


def param(dialect: str, column: Column, value: Any, stored_json: Any = None) -> Any:
    """A column's value (shape.fit's) as this database's driver is sent it; None for NULL."""
    if value is None:
        return None
    kind = column.type
    if dialect == "sqlite" and (kind.array or kind.base == "OBJECT"):
        return dumps(value)
    if dialect == "postgresql" and _json_in_postgres(kind):
        text = dumps(value)
        return stored_json(text) if stored_json is not None else text
    element = ColumnType(kind.base, False, kind.precision, kind.scale)
    if kind.array:
        return [_param_scalar(dialect, element, item) for item in value]
    return _param_scalar(dialect, kind, value)


def select_expression(dialect: str, column: Column) -> str:
    """How to read the column so its value comes back exact (numbers as text where the driver would round)."""
    name = _quote(column.name)
    if column.type.base == "NUMERIC" and dialect == "cratedb":
        return f"{name}::ARRAY(TEXT)" if column.type.array else f"{name}::TEXT"
    if dialect == "postgresql" and _json_in_postgres(column.type):
        return f"{name}::text"
    return name


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (moment - EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, str):  # SQLite's ISO text
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment - EPOCH) // timedelta(milliseconds=1)
    return int(value)


def _read_scalar(dialect: str, kind: ColumnType, value: Any) -> Any:
    if value is None:
        return None
    base = kind.base
    if base == "NUMERIC":
        return Decimal(str(value)) if not isinstance(value, Decimal) else value
    if base == "TIMESTAMP":
        return _ms(value)
    if base == "BOOLEAN":
        return bool(value)
    return value


def read_value(dialect: str, column: Column, value: Any, load_document: Any = None) -> Any:
    """A value read with select_expression() back in shape.fit's form (to_item() makes the attribute of it)."""
    if value is None:
        return None
    kind = column.type
    if dialect == "sqlite" and (kind.array or kind.base == "OBJECT"):
        value = loads(value)
    elif dialect == "postgresql" and _json_in_postgres(kind):
        value = load_document(value) if load_document is not None else loads(value)
    if kind.base == "OBJECT":
        return value
    element = ColumnType(kind.base, False, kind.precision, kind.scale)
    if kind.array:
        return [_read_scalar(dialect, element, item) for item in value]
    return _read_scalar(dialect, kind, value)
