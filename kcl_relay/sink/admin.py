"""Helpers for the companion commands (sql, show): read-only use of a target through SQLAlchemy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.pool import NullPool

from kcl_relay.sink.dialect import quote_ident
from kcl_relay.sink.target import TargetSpec

__all__ = ["TablePage", "check_reachable", "primary_key", "run_sql", "show_table", "table_state"]

Rows = list[tuple[Any, ...]]


def run_sql(spec: TargetSpec, sql: str, commit: bool = False) -> tuple[list[str], Rows]:
    """Run one statement on the target's database; returns (column names, rows), both empty without a result.

    Without `commit` (queries of the relay's own tools), PostgreSQL and SQLite roll the transaction back; with it
    (`kcl-relay shell`, a person's statement) it is committed. CrateDB has no transactions: a write takes effect.
    """
    engine = spec.create_engine(poolclass=NullPool)
    try:
        with engine.connect() as connection:
            result = connection.exec_driver_sql(sql)
            columns, rows = (list(result.keys()), [tuple(row) for row in result]) if result.returns_rows else ([], [])
            if commit:
                connection.commit()
            return columns, rows
    finally:
        engine.dispose()


def check_reachable(spec: TargetSpec) -> None:
    """Connect once before anything starts: a wrong host, port or password is a one-line TargetError."""
    from sqlalchemy.exc import SQLAlchemyError

    from kcl_relay.sink.target import TargetError

    try:
        run_sql(spec, "SELECT 1")
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        if "WRONG_VERSION_NUMBER" in reason or "SSLError" in reason:
            reason = "the TLS handshake failed: the server does not seem to speak TLS (drop ?ssl=true for plain HTTP)"
        raise TargetError(f"cannot reach the target {spec.describe()}: {reason}") from None


def _relation(spec: TargetSpec, name: str) -> str:
    schema, dot, table = name.rpartition(".")
    if spec.dialect == "sqlite":
        return quote_ident(table)
    return f"{quote_ident(schema if dot else spec.schema or '')}.{quote_ident(table)}"


def _split(spec: TargetSpec, name: str) -> tuple[str, str]:
    schema, dot, table = name.rpartition(".")
    return (schema if dot else spec.schema or ""), table


def primary_key(spec: TargetSpec, name: str) -> list[str]:
    """The primary key columns of table `name`, as expressions to ORDER BY (CrateDB: pk['id'] sub-columns)."""
    schema, table = _split(spec, name)
    if spec.dialect == "sqlite":
        _, rows = run_sql(spec, f"SELECT name, pk FROM pragma_table_info({_literal(table)})")
        return [quote_ident(str(column)) for column, position in sorted(rows, key=lambda row: row[1]) if position]
    if spec.dialect == "postgresql":
        sql = (
            "SELECT k.column_name FROM information_schema.table_constraints c JOIN "
            "information_schema.key_column_usage k ON c.constraint_name = k.constraint_name "
            "AND c.table_schema = k.table_schema AND c.table_name = k.table_name "
            "WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = %(s)s AND c.table_name = %(t)s "
            "ORDER BY k.ordinal_position"
        )
        engine = spec.create_engine(poolclass=NullPool)
        try:
            with engine.connect() as connection:
                rows = connection.exec_driver_sql(sql, {"s": schema, "t": table}).fetchall()
        finally:
            engine.dispose()
        return [quote_ident(str(row[0])) for row in rows]
    # information_schema.key_column_usage names only "pk" for pk['id']; SHOW CREATE TABLE has the expressions.
    create = str(run_sql(spec, f"SHOW CREATE TABLE {_relation(spec, name)}")[1][0][0])
    match = re.search(r"^\s*PRIMARY KEY \((.+)\)\s*$", create, re.MULTILINE)
    return [column.strip() for column in match.group(1).split(", ")] if match else []


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class TablePage:
    columns: list[str]
    rows: Rows
    total: int  # rows in the table
    order: list[str]  # the ORDER BY expressions (the primary key), empty when the table has none


def show_table(spec: TargetSpec, name: str, limit: int = 100) -> TablePage:
    """The first `limit` rows of table `name` ("schema.table" or "table", in the target's schema), in primary key
    order, and how many there are.

    On CrateDB the table is refreshed first, so rows written a moment ago show up (a person is looking: this is
    not the relay's write path, which never refreshes).
    """
    relation = _relation(spec, name)
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")
    order = primary_key(spec, name)
    total = int(run_sql(spec, f"SELECT count(*) FROM {relation}")[1][0][0])
    query = f"SELECT * FROM {relation}" + (f" ORDER BY {', '.join(order)}" if order else "") + f" LIMIT {int(limit)}"
    columns, rows = run_sql(spec, query)
    return TablePage(columns=columns, rows=rows, total=total, order=order)


def table_state(spec: TargetSpec, table: str | None = None) -> str:
    """ "missing", "empty" or "rows": what the target table (or `table`, in the target's schema) holds."""
    from sqlalchemy import inspect

    name = table or spec.table
    engine = spec.create_engine(poolclass=NullPool)
    try:
        if not inspect(engine).has_table(name, schema=spec.schema):
            return "missing"
        relation = _relation(spec, f"{spec.schema}.{name}" if spec.schema else name)
        with engine.connect() as connection:
            return "rows" if connection.exec_driver_sql(f"SELECT 1 FROM {relation} LIMIT 1").first() else "empty"
    finally:
        engine.dispose()
