"""Which failures are not about a row, per dialect: the table's state (retried like an outage), a concurrent DDL race
(retried, then found existing), or neither. tests/integration provokes them on the real servers: a dropped table
(sink suite, all three), a revoked privilege (PostgreSQL), CrateDB's own messages (test_cratedb_behaviour.py)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from crate.client import exceptions as crate_errors
from sqlalchemy import exc as sa_exc

from kcl_relay.sink.cratedb import CrateDBDialect
from kcl_relay.sink.dialect import Dialect
from kcl_relay.sink.executor import StatementExecutor
from kcl_relay.sink.postgresql import PostgreSQLDialect
from kcl_relay.sink.retry import RetryPolicy
from kcl_relay.sink.sqlite import SQLiteDialect
from kcl_relay.sink.target import parse_target

CRATE = CrateDBDialect("doc", "t")
POSTGRES = PostgreSQLDialect("public", "t")
SQLITE = SQLiteDialect(None, "t")


def crate(message: str) -> Exception:
    return crate_errors.ProgrammingError(message)


OUTAGES: list[tuple[Dialect, BaseException]] = [
    (CRATE, crate("RelationUnknown[Relation 'doc.t' unknown]")),
    (CRATE, crate("SchemaUnknownException[Schema 'nope' unknown]")),
    (CRATE, crate("ColumnUnknownException[Column data['x'] unknown]")),
    (CRATE, crate("MissingPrivilegeException[Missing 'DML' privilege for user 'relay']")),
    (CRATE, crate("UnauthorizedException[User 'relay' is not authorized]")),
    (CRATE, crate("401 Client Error: Unauthorized")),
    (POSTGRES, psycopg.errors.UndefinedTable('relation "t" does not exist')),
    (POSTGRES, psycopg.errors.UndefinedColumn('column "data" does not exist')),
    (POSTGRES, psycopg.errors.InsufficientPrivilege("permission denied for table t")),
    (POSTGRES, psycopg.errors.InvalidPassword('password authentication failed for user "relay"')),
    (POSTGRES, psycopg.errors.InvalidSchemaName('schema "cdc" does not exist')),
    (POSTGRES, psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")),
    (SQLITE, sqlite3.OperationalError("no such table: t")),
    (SQLITE, sqlite3.OperationalError("table t has no column named data")),
    (SQLITE, sqlite3.OperationalError("attempt to write a readonly database")),
]
NOT_OUTAGES: list[tuple[Dialect, BaseException]] = [
    (CRATE, crate("SQLParseException[Limit of total columns [1000] in table [doc.t] exceeded]")),  # a row: aux
    (CRATE, crate("SQLParseException[Cannot cast object element `n` with value `x` to type `bigint`]")),
    (CRATE, crate("SQLParseException[line 1:8: mismatched input]")),  # our SQL: a crash
    (CRATE, TypeError("Integer exceeds 64-bit range")),  # the driver refused our value: a crash
    (POSTGRES, psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence")),
    (POSTGRES, psycopg.errors.SyntaxError('syntax error at or near "ON"')),
    (SQLITE, sqlite3.IntegrityError("NOT NULL constraint failed: t.data")),
    (SQLITE, sqlite3.OperationalError('near "ON": syntax error')),
]


def label(case: tuple[Dialect, BaseException]) -> str:
    return f"{case[0].name}-{type(case[1]).__name__}"


@pytest.mark.parametrize("case", OUTAGES, ids=label)
def test_the_tables_state_is_an_outage_not_a_row(case: tuple[Dialect, BaseException]) -> None:
    dialect, error = case
    assert dialect.is_outage(error) and not dialect.is_row_error(error)


@pytest.mark.parametrize("case", NOT_OUTAGES, ids=label)
def test_rows_and_bugs_are_not_outages(case: tuple[Dialect, BaseException]) -> None:
    dialect, error = case
    assert not dialect.is_outage(error)


@pytest.mark.parametrize(
    "case",
    [
        (POSTGRES, psycopg.errors.DuplicateObject('type "demo__relay" already exists')),  # issue 15 i
        (POSTGRES, psycopg.errors.DuplicateTable('relation "demo__relay" already exists')),
        (POSTGRES, psycopg.errors.UniqueViolation('duplicate key value violates unique constraint "pg_type_typn"')),
        (POSTGRES, psycopg.errors.DuplicateSchema('schema "cdc" already exists')),
        (CRATE, crate("RelationAlreadyExists[Relation 'doc.demo__relay' already exists.]")),
        (SQLITE, sqlite3.OperationalError("table t already exists")),
    ],
    ids=label,
)
def test_concurrent_ddl_is_retried(case: tuple[Dialect, BaseException]) -> None:
    dialect, error = case
    assert dialect.is_ddl_race(error)
    executor = StatementExecutor(parse_target("sqlite:///unused.db", "t"), dialect, RetryPolicy())
    wrapped = sa_exc.ProgrammingError("CREATE TABLE", {}, error)  # SQLAlchemy's wrapper says the same
    assert executor._ddl_race_or_retryable(error) and executor._ddl_race_or_retryable(wrapped)
    assert not executor.retryable(error)  # only while creating tables
    executor.close()
