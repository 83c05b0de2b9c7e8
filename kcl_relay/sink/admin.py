"""Helpers for the companion commands (sql, show): read-only use of a target through SQLAlchemy."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.pool import NullPool

from kcl_relay.sink.dialect import Dialect, quote_ident
from kcl_relay.sink.target import TargetSpec

if TYPE_CHECKING:
    from kcl_relay.cdc.event import KeyType
    from kcl_relay.mapping.spec import Column, TableMapping

__all__ = [
    "Outcome",
    "TablePage",
    "add_column_statements",
    "check_reachable",
    "connect_failure",
    "count_line",
    "create_statements",
    "primary_key",
    "rows_text",
    "run_sql",
    "run_statement",
    "show_table",
    "table_state",
    "with_columns",
]

Rows = list[tuple[Any, ...]]


@dataclass
class Outcome:
    """What one statement gave: its columns and rows (both empty without a result), and the rows it changed."""

    columns: list[str]
    rows: Rows
    rowcount: int  # the database's count of rows a write changed; -1 when it gives none (DDL on PostgreSQL)
    returns_rows: bool


# The end of every dialect's column list in its target CREATE TABLE: mapped columns and table options go there.
_LAST_COLUMN = "cdc_event TEXT NOT NULL)"


def create_statements(
    dialect: Dialect, key_types: Mapping[str, KeyType], mapping: TableMapping | None = None
) -> list[str]:
    """Everything the relay creates for a target table, in order: the target (with its mapped columns and table
    options), the tombstones, the dead letters. The one place for it: the writer runs these, `ddl` prints them."""
    statements = [*dialect.create_tables(key_types), dialect.create_dead_letter_table()]
    if mapping is None or (
        not mapping.columns
        and not mapping.shards
        and mapping.replicas is None
        and mapping.refresh_interval_ms is None
        and mapping.partition is None
    ):
        return statements
    from kcl_relay.mapping.sql import column_sql, partition_columns_sql, table_clause

    target = f"CREATE TABLE IF NOT EXISTS {dialect.relation()} ("
    index = next(i for i, statement in enumerate(statements) if statement.startswith(target))
    head, found, tail = statements[index].rpartition(_LAST_COLUMN)
    if not found:
        raise RuntimeError(f"the {dialect.name} target table statement has no {_LAST_COLUMN!r} to add columns after")
    columns = "".join(f", {column_sql(dialect.name, column)}" for column in mapping.columns)
    columns += partition_columns_sql(dialect.name, mapping)
    statements[index] = f"{head}{_LAST_COLUMN[:-1]}{columns}){table_clause(dialect.name, mapping)}{tail}"
    return statements


def add_column_statements(dialect: Dialect, columns: Sequence[Column]) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for mapped columns a table lacks (the relay never drops one)."""
    from kcl_relay.mapping.sql import column_sql

    return [f"ALTER TABLE {dialect.relation()} ADD COLUMN {column_sql(dialect.name, column)}" for column in columns]


def run_statement(spec: TargetSpec, sql: str, commit: bool = False) -> Outcome:
    """Run one statement on the target's database.

    Without `commit` (queries of the relay's own tools), PostgreSQL and SQLite roll the transaction back; with it
    (`kcl-relay shell`, a person's statement) it is committed. CrateDB has no transactions: a write takes effect.
    """
    engine = spec.create_engine(poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if spec.dialect == "postgresql":
                _exact_json(connection.connection.driver_connection)
            result = connection.exec_driver_sql(sql)
            # CrateDB answers a write with a result of no columns and one empty row: that is no result.
            returns_rows = result.returns_rows and bool(result.keys())
            columns, rows = (list(result.keys()), [tuple(row) for row in result]) if returns_rows else ([], [])
            rowcount = -1 if returns_rows or result.rowcount is None else int(result.rowcount)
            if commit:
                connection.commit()
            return Outcome(columns, rows, rowcount, returns_rows)
    finally:
        engine.dispose()


def _exact_json(connection: Any) -> None:
    """JSON and JSONB values with exact numbers (psycopg's json.loads makes 0.1234567890123456789 a float), as the
    SQLite file's JSON text and CrateDB's numbers are shown: one item prints the same way on every target."""
    from psycopg.types.json import set_json_loads

    from kcl_relay.cdc.jsonenc import loads

    set_json_loads(loads, connection)


def run_sql(spec: TargetSpec, sql: str, commit: bool = False) -> tuple[list[str], Rows]:
    """Run one statement (as run_statement); returns (column names, rows), both empty without a result."""
    outcome = run_statement(spec, sql, commit)
    return outcome.columns, outcome.rows


# Statements whose row count is the rows they changed (CrateDB counts 1 for a CREATE TABLE, too: no such count).
_WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|COPY|MERGE|WITH)\b", re.IGNORECASE)


def count_line(outcome: Outcome, sql: str) -> str:
    """What `shell` says after a statement: the rows it returned, else the rows the database says it changed."""
    if outcome.returns_rows:
        return f"({rows_text(len(outcome.rows))})"
    if outcome.rowcount < 0 or not _WRITES.match(sql):
        return "(done)"
    return f"({rows_text(outcome.rowcount)} affected)"


def rows_text(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def check_reachable(spec: TargetSpec) -> None:
    """Connect once before anything starts: a wrong host, port, user, option or TLS setting is a one-line
    TargetError that says which, with the URL as typed (password masked)."""
    from sqlalchemy.exc import SQLAlchemyError

    from kcl_relay.sink.target import TargetError

    try:
        run_sql(spec, "SELECT 1")
    except (SQLAlchemyError, OSError) as error:  # OSError: the crate client's check of ca_cert=
        raise TargetError(connect_failure(spec, error)) from None


# How to trust a private CA. The crate client reads ca_cert=, else REQUESTS_CA_BUNDLE, else OpenSSL's defaults
# (SSL_CERT_FILE); libpq reads sslrootcert= (else ~/.postgresql/root.crt).
CA_HINTS = {
    "cratedb": "trust its CA with ca_cert=PATH in the URL (or REQUESTS_CA_BUNDLE=PATH)",
    "postgresql": "trust its CA with sslrootcert=PATH in the URL",
}
NO_TLS_HINTS = {"cratedb": "drop ssl=true for plain HTTP", "postgresql": "drop sslmode=require"}
_CERTIFICATE = re.compile(r"certificate verify failed: ([^(\n]+?)\s*(?:\(_ssl\.c|$|\))", re.IGNORECASE)
_NOT_TLS = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long", "http request")
_PG_AUTH = ("role ", "password authentication failed", "no pg_hba.conf entry")
_PG_OPTION = ("invalid connection option", "invalid value for parameter", "unrecognized configuration parameter")


def _address(spec: TargetSpec) -> str:
    from kcl_relay.sink.target import DEFAULT_PORTS

    host = spec.url.host or "localhost"
    return f"{host}:{spec.url.port or DEFAULT_PORTS.get(spec.dialect, '')}"


def connect_failure(spec: TargetSpec, error: BaseException) -> str:
    """The one line for a first connection that failed: what failed and what to do, never the driver's chain."""
    text = str(getattr(error, "orig", None) or error)
    where = f"the target {spec.dialect} table {spec.qualified_table} at {spec.shown_url}"
    address, tls = _address(spec), spec.url.query.get("sslmode") not in (None, "disable", "allow")
    cause = _cause(spec, text, address, tls)
    if cause is not None:
        return f"cannot use {where}: {cause}"
    if "Connection refused" in text:
        return f"cannot reach {where}: connection refused at {address} (no server listening there?)"
    if "Failed to resolve" in text or "failed to resolve host" in text or "Name or service not known" in text:
        return f"cannot reach {where}: the host name {spec.url.host} does not resolve"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"cannot reach {where}: no answer from {address} (timed out)"
    return f"cannot reach {where}: {_first_line(error)}"


def _cause(spec: TargetSpec, text: str, address: str, tls: bool) -> str | None:
    """TLS, authentication, option and CA file failures (the server, or its port, answered)."""
    if 'CA bundle file "' in text:
        return f"the ca_cert file {text.split(chr(34))[1]} does not exist"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower():
        found = _CERTIFICATE.search(text)
        detail = found.group(1).strip().rstrip(".") if found else "certificate verify failed"
        if "mismatch" in detail.lower():
            return (
                f"TLS: the server's certificate is not valid for the host name {spec.url.host} ({detail}); "
                "connect by a name the certificate carries"
            )
        return f"TLS: the server's certificate is not trusted ({detail}); {CA_HINTS.get(spec.dialect, '')}"
    if "does not match host name" in text:  # libpq
        return f"TLS: the server's certificate is not valid for the host name {spec.url.host}"
    if any(marker in text for marker in _NOT_TLS) or "server does not support SSL" in text:
        hint = NO_TLS_HINTS.get(spec.dialect, "")
        return f"TLS: the server at {address} does not speak TLS on that port ({hint})"
    if not tls and spec.dialect == "cratedb" and ("RemoteDisconnected" in text or "Connection aborted" in text):
        return f"the server at {address} expects TLS on that port: add ?ssl=true (plain HTTP was sent)"
    if "401 Client Error" in text or "trust authentication failed" in text:
        return f"authentication failed for user {spec.url.username or 'crate'!r} (HTTP 401): check user and password"
    if spec.dialect == "postgresql":
        return _postgres_cause(text)
    return None


def _postgres_cause(text: str) -> str | None:
    """libpq's refusals: the server's (FATAL: ...) and libpq's own checks of the options."""
    fatal = text.split("FATAL:", 1)[1].strip().splitlines()[0] if "FATAL:" in text else None
    reason = fatal or re.sub(r"^connection (?:is bad|failed): ", "", _first_line(text))
    if fatal and any(marker in fatal for marker in _PG_AUTH):
        return f"authentication failed: {fatal}"
    if any(marker in text for marker in _PG_OPTION) or re.search(r"invalid \w+ value", text):
        return f"an option of the URL was refused: {reason}"
    return fatal  # the server refused the connection for another reason (a database that does not exist)


def _first_line(error: BaseException | str) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


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
                found = connection.exec_driver_sql(sql, {"s": schema, "t": table}).fetchall()
        finally:
            engine.dispose()
        return [quote_ident(str(row[0])) for row in found]
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
    mapping: TableMapping | None = None  # a relay target filled with a mapping: its columns follow cdc_event


def show_table(spec: TargetSpec, name: str, limit: int = 100) -> TablePage:
    """The first `limit` rows of table `name` ("schema.table" or "table", in the target's schema), in primary key
    order, and how many there are.

    On CrateDB the table is refreshed first, so rows written a moment ago show up (a person is looking: this is
    not the relay's write path, which never refreshes).
    """
    from kcl_relay.sink.writer import dialect_for

    relation = _relation(spec, name)
    refresh = dialect_for(spec).refresh_sql(relation)
    if refresh is not None:
        run_sql(spec, refresh)
    order = primary_key(spec, name)
    total = int(run_sql(spec, f"SELECT count(*) FROM {relation}")[1][0][0])
    mapping, outputs = _mapped_outputs(spec, name)
    query = f"SELECT {outputs} FROM {relation}" + (f" ORDER BY {', '.join(order)}" if order else "")
    columns, rows = run_sql(spec, query + f" LIMIT {int(limit)}")
    return TablePage(columns=columns, rows=rows, total=total, order=order, mapping=mapping)


def _mapped_outputs(spec: TargetSpec, name: str) -> tuple[TableMapping | None, str]:
    """A table filled with a mapping: its row columns, then the mapped ones read exactly; else every column."""
    import dataclasses

    from kcl_relay.mapping.sql import select_expression
    from kcl_relay.sink.dialect import ROW_COLUMNS
    from kcl_relay.sink.mapped_table import stored_mapping

    schema, table = _split(spec, name)
    mapping = stored_mapping(dataclasses.replace(spec, schema=schema or spec.schema, table=table))
    if mapping is None or not mapping.columns:
        return None, "*"
    mapped = [f"{select_expression(spec.dialect, column)} AS {quote_ident(column.name)}" for column in mapping.columns]
    return mapping, ", ".join([*ROW_COLUMNS, *mapped])


def with_columns(spec: TargetSpec, mapping: TableMapping, values: list[Any], row: Sequence[Any]) -> list[Any]:
    """A shown row's pk, data, aux (loaded), cdc_* values with the mapped columns' values (read from `row`) put
    back at their attribute paths: the item's other attributes as `data`, `aux` empty."""
    from kcl_relay.mapping.shape import restore
    from kcl_relay.mapping.sql import read_value
    from kcl_relay.sink.writer import dialect_for

    load = dialect_for(spec).load_document
    columns = {
        column.name: read_value(spec.dialect, column, value, lambda document: load(document, "data"))
        for column, value in zip(mapping.columns, row[6:], strict=True)
    }
    pk, data, aux, *cdc = values[:6]
    return [pk, restore(mapping, {**(data or {}), **(aux or {})}, columns), {}, *cdc]


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
