"""Helpers for the companion commands (sql, show): read-only use of a target through SQLAlchemy."""

from __future__ import annotations

from typing import Any

from sqlalchemy.pool import NullPool

from kcl_relay.sink.dialect import quote_ident
from kcl_relay.sink.target import TargetSpec

__all__ = ["check_reachable", "run_sql", "show_table"]

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
        raise TargetError(f"cannot reach the target {spec.describe()}: {reason}") from None


def _relation(spec: TargetSpec, name: str) -> str:
    schema, dot, table = name.rpartition(".")
    if spec.dialect == "sqlite":
        return quote_ident(table)
    return f"{quote_ident(schema if dot else spec.schema or '')}.{quote_ident(table)}"


def show_table(spec: TargetSpec, name: str, limit: int | None = 100) -> tuple[list[str], Rows]:
    """The rows of table `name` ("schema.table" or "table", in the target's schema); at most `limit` of them.

    On CrateDB the table is refreshed first, so rows written a moment ago show up (a person is looking: this is
    not the relay's write path, which never refreshes).
    """
    relation = _relation(spec, name)
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")
    query = f"SELECT * FROM {relation}" + (f" LIMIT {int(limit)}" if limit is not None else "")
    return run_sql(spec, query)
