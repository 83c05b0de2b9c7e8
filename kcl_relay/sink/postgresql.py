"""PostgreSQL: pk JSONB PRIMARY KEY (canonical JSON), data and aux JSONB; JSON travels as text cast to JSONB.

JSONB keeps numbers as NUMERIC, so DynamoDB's 38-digit numbers stay exact. cdc_order uses the "C" collation so
the tie-breaker compares bytewise, like the order token was designed to, whatever the database's locale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import psycopg

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType
from kcl_relay.cdc.jsonenc import dumps, loads
from kcl_relay.cdc.layout import Row
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, TOMBSTONES_SUFFIX, JsonDocumentDialect, RowState, quote_ident

__all__ = ["PostgreSQLDialect"]

# Errors about one row's values: data exceptions (SQLSTATE class 22, psycopg.DataError), integrity violations
# (class 23, psycopg.IntegrityError) and program_limit_exceeded, e.g. a key too large for the primary key index.
_ROW_ERROR_STATES = ("54000",)
# The database's state, not a row: undefined table, column, object (42P01, 42703, 42704), insufficient privilege
# (42501), invalid authorization (class 28), invalid catalog or schema name (3D000, 3F000), a read-only transaction
# (25006, a hot standby). Retried like an outage.
_OUTAGE_STATES = ("42P01", "42703", "42704", "42501", "3D000", "3F000", "25006")
_OUTAGE_CLASSES = ("28",)
# CREATE ... IF NOT EXISTS raced by another session: duplicate object (a table's row type, "type ... already
# exists"), table or schema, or a unique violation in the catalog (pg_type, pg_namespace).
_DDL_RACE_STATES = ("42710", "42P07", "42P06", "23505")


class PostgreSQLDialect(JsonDocumentDialect):
    name: ClassVar[str] = "postgresql"
    param: ClassVar[str] = "%s"
    json_param: ClassVar[str] = "%s::jsonb"
    pk_output: ClassVar[str] = "pk::text"
    keys_per_select: ClassVar[int] = 1000

    def create_tables(self, key_types: Mapping[str, KeyType]) -> list[str]:
        self.check_key(key_types)
        tombstones = self.relation(TOMBSTONES_SUFFIX)
        index = quote_ident(self.table + TOMBSTONES_SUFFIX + "_deleted_at")
        # CREATE SCHEMA needs the CREATE privilege on the database even when the schema exists: skip it for public.
        schema = [] if self.schema == "public" else [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema or '')}"]
        return [
            *schema,
            f"CREATE TABLE IF NOT EXISTS {self.relation()} (pk JSONB PRIMARY KEY, data JSONB NOT NULL, "
            'aux JSONB NOT NULL, cdc_version BIGINT NOT NULL, cdc_order TEXT COLLATE "C" NOT NULL, '
            "cdc_event TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {tombstones} (key_id TEXT PRIMARY KEY, cdc_version BIGINT NOT NULL, "
            'cdc_order TEXT COLLATE "C" NOT NULL, deleted_at TIMESTAMPTZ NOT NULL)',
            f"CREATE INDEX IF NOT EXISTS {index} ON {tombstones} (deleted_at)",
        ]

    def create_dead_letter_table(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.relation(DEADLETTERS_SUFFIX)} (raw TEXT NOT NULL, "
            "reason TEXT NOT NULL, shard_id TEXT, sequence_number TEXT, failed_at TIMESTAMPTZ NOT NULL)"
        )

    def key_rejection(self, event: ChangeEvent) -> str | None:
        # The only canonical JSON text JSONB refuses is a NUL character (written \u0000) inside a string.
        if any(isinstance(value, str) and "\x00" in value for value in event.key.values()):
            return "PostgreSQL JSONB cannot hold the NUL character (\\u0000) in a key attribute"
        return None

    def upsert_params(self, event: ChangeEvent, row: Row) -> tuple[Any, ...]:
        return (event.key_id, dumps(row.data), dumps(row.aux), event.version, event.order[1], event.op)

    def read_state(self, record: Sequence[Any]) -> RowState:
        # JSONB prints its own normalised text; reparse exactly and re-encode canonically to match key_id.
        return RowState(key=dumps(loads(record[0])), order=(int(record[1]), str(record[2])))

    def prepare(self, connection: Any) -> None:
        # The tombstone check (a read) and the upsert it allows are two statements; so are a REMOVE's state read
        # and delete. Under SERIALIZABLE a concurrent worker interleaving with them makes one transaction fail with
        # a serialization failure (40001), which is retried, instead of letting an older write resurrect a row.
        connection.driver_connection.isolation_level = psycopg.IsolationLevel.SERIALIZABLE

    def dead_letter_params(self, letter: DeadLetter) -> tuple[Any, ...]:
        # TEXT cannot hold NUL; a dead letter must land anyway, so NUL becomes U+FFFD.
        raw, reason = letter.raw.replace("\x00", "\ufffd"), letter.reason.replace("\x00", "\ufffd")
        return (raw, reason, letter.shard_id, letter.sequence_number, letter.failed_at)

    def is_outage(self, exc: BaseException) -> bool:
        if not isinstance(exc, psycopg.Error):
            return False
        state = exc.sqlstate or ""
        return state in _OUTAGE_STATES or state[:2] in _OUTAGE_CLASSES

    def is_ddl_race(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _DDL_RACE_STATES

    def is_row_error(self, exc: BaseException) -> bool:
        if isinstance(exc, UnicodeEncodeError):  # text the client cannot encode (lone surrogates)
            return True
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):  # also raised by the client, without state
            return True
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _ROW_ERROR_STATES
