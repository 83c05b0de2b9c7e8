"""SQLite: pk, data and aux are JSON text (canonical, via jsonenc) whose union is exactly the item."""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

from kcl_relay.cdc.event import ChangeEvent, KeyType
from kcl_relay.cdc.jsonenc import dumps
from kcl_relay.cdc.layout import Row
from kcl_relay.sink.dialect import (
    DEADLETTERS_SUFFIX,
    TOMBSTONES_SUFFIX,
    Driver,
    Features,
    JsonDocumentDialect,
    RowIdentity,
    RowState,
    quote_ident,
)

__all__ = ["SQLiteDialect"]

_OUTAGE_SIGNS = ("no such table", "no such column", "has no column named", "readonly database")


class SQLiteDriver(Driver):
    """SQLite's own transaction control: the connection runs in autocommit mode (see prepare) so that BEGIN,
    SAVEPOINT and COMMIT mean what they say instead of the sqlite3 module's implicit transactions."""

    def prepare(self, connection: Any) -> None:
        connection.driver_connection.isolation_level = None

    def begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock on lock upgrade

    def commit(self, connection: Any) -> None:
        if connection.driver_connection.in_transaction:
            connection.driver_connection.execute("COMMIT")

    def rollback(self, connection: Any) -> None:
        if connection.driver_connection.in_transaction:
            connection.driver_connection.execute("ROLLBACK")


class SQLiteDialect(JsonDocumentDialect):
    name: ClassVar[str] = "sqlite"
    # A failed statement undoes only itself and leaves the transaction usable, and a bulk that failed part-way is
    # re-run row by row with idempotent guarded statements: no savepoints needed. One local file: no server.
    features: ClassVar[Features] = Features(savepoints=False, server=False, users=False)
    driver: ClassVar[Driver] = SQLiteDriver()
    keys_per_select: ClassVar[int] = 999  # the historical default limit of host parameters per statement
    row_identity: ClassVar[RowIdentity] = RowIdentity("rowid", "rowid", "?")

    def __init__(self, schema: str | None, table: str) -> None:
        super().__init__(None, table)  # one database file, one namespace: a schema is ignored

    def create_tables(self, key_types: Mapping[str, KeyType]) -> list[str]:
        self.check_key(key_types)
        tombstones = self.relation(TOMBSTONES_SUFFIX)
        return [
            f"CREATE TABLE IF NOT EXISTS {self.relation()} (pk TEXT PRIMARY KEY, data TEXT NOT NULL, "
            "aux TEXT NOT NULL, cdc_version INTEGER NOT NULL, cdc_order TEXT NOT NULL, cdc_event TEXT NOT NULL) "
            "WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {tombstones} (key_id TEXT PRIMARY KEY, cdc_version INTEGER NOT NULL, "
            "cdc_order TEXT NOT NULL, deleted_at TEXT NOT NULL) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {quote_ident(self.table + TOMBSTONES_SUFFIX + '_deleted_at')} "
            f"ON {tombstones} (deleted_at)",
        ]

    def create_dead_letter_table(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.relation(DEADLETTERS_SUFFIX)} (raw TEXT NOT NULL, "
            "reason TEXT NOT NULL, shard_id TEXT, sequence_number TEXT, failed_at TEXT NOT NULL)"
        )

    def upsert_params(self, event: ChangeEvent, row: Row) -> tuple[Any, ...]:
        return (event.key_id, dumps(row.data), dumps(row.aux), event.version, event.order[1], event.op)

    def read_state(self, record: Sequence[Any]) -> RowState:
        key: Hashable = record[0]  # stored as the canonical key_id text itself
        return RowState(key=key, order=(int(record[1]), str(record[2])))

    def timestamp(self, value: datetime) -> Any:
        # Fixed-width UTC ISO text: compares like the instant it names, so purge can use '<'.
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")

    def table_exists_sql(self, name: str) -> tuple[str, tuple[Any, ...]]:
        return f"SELECT name FROM sqlite_master WHERE type = 'table' AND name = {self.param}", (name,)

    def existing_sql(self, names: Sequence[str]) -> tuple[str, list[Any]]:
        marks = ", ".join([self.param] * len(names)) or "NULL"
        return f"SELECT name FROM sqlite_master WHERE name IN ({marks})", list(names)

    def is_outage(self, exc: BaseException) -> bool:
        # A table dropped or changed under the relay, a file that became read-only: retried like an outage.
        message = str(exc).lower() if isinstance(exc, sqlite3.OperationalError) else ""
        return any(sign in message for sign in _OUTAGE_SIGNS)

    def is_ddl_race(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "already exists" in str(exc)

    def is_row_error(self, exc: BaseException) -> bool:
        # Constraint failures (triggers' RAISE(ABORT) included), oversized values, text the driver cannot encode.
        return isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, UnicodeEncodeError))
