"""PostgreSQL: pk JSONB PRIMARY KEY (canonical JSON), data and aux JSONB; JSON travels as text cast to JSONB.

JSONB keeps numbers as NUMERIC, so DynamoDB's 38-digit numbers stay exact. cdc_order uses the "C" collation so
the tie-breaker compares bytewise, like the order token was designed to, whatever the database's locale.

JSONB cannot hold the character U+0000 (NUL) in a string or an object key (SQLSTATE 22P05), yet DynamoDB allows it
in any string and name. So every string and key in pk, data and aux is stored escaped, reversibly, with the
noncharacter U+FDD0 as the marker: NUL becomes MARK + "0" and MARK itself becomes MARK + "1"; nothing else changes.

Why this is unambiguous: the escape maps each character on its own (a prefix code: NUL -> M0, M -> M1, any other
c -> c), so an escaped string never contains NUL, and every M in it is followed by "0" or "1". Reading it left to
right, each M and the character after it stand for exactly one original character: unescape(escape(s)) == s for
every s, so escape is injective: two different items never share a stored row (pk) and a stored document always
reads back as the item it came from. Text without NUL and MARK is left as it is, byte for byte (the hot path: two
substring searches of the JSON text, for the escape \\u0000 and for MARK). Stored text is unescaped only where
MARK appears.
A string holding the six characters \\u0000 (backslash, u, four zeros) is no NUL: it passes through the slow path
unchanged. Tombstones keep the plain canonical key_id: JSON text writes NUL as the escape \\u0000, never as the
character, and TEXT holds that and MARK; so do the writer's state keys (read_state unescapes what it reads).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import psycopg

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType
from kcl_relay.cdc.jsonenc import dumps, loads
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

MARK = "\ufdd0"  # a Unicode noncharacter (reserved for internal use, never a character): rare in real text
_ESCAPED = re.compile(MARK + "[01]")


def escape(text: str) -> str:
    """NUL -> MARK "0", MARK -> MARK "1" (MARK first, so the MARKs that the NULs become are not doubled)."""
    return text.replace(MARK, MARK + "1").replace("\x00", MARK + "0")


def unescape(text: str) -> str:
    """The inverse of escape(): left to right, each MARK with the character after it is one original character.
    A MARK followed by anything else (never written by escape()) is left as it is."""
    if MARK not in text:
        return text
    return _ESCAPED.sub(lambda match: "\x00" if match.group()[1] == "0" else MARK, text)


def _each_string(value: Any, change: Callable[[str], str]) -> Any:
    """`value` with `change` applied to every string and every object key, at any depth."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {change(name): _each_string(child, change) for name, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [_each_string(child, change) for child in value]
    return value


def stored_json(text: str) -> str:
    """Canonical JSON text (dumps) as JSONB can hold it: escaped only when it has a NUL or a MARK."""
    if "\\u0000" not in text and MARK not in text:
        return text
    return dumps(_each_string(loads(text), escape))


def item_document(value: Any) -> Any:
    """A stored pk/data/aux (JSONB as text, or as the driver parsed it) back as the item holds it."""
    if isinstance(value, str):
        document = loads(value)
        return _each_string(document, unescape) if MARK in value else document
    return _each_string(value, unescape)


class PostgreSQLDriver(Driver):
    def prepare(self, connection: Any) -> None:
        # The tombstone check (a read) and the upsert it allows are two statements; so are a REMOVE's state read
        # and delete. Under SERIALIZABLE a concurrent worker interleaving with them makes one transaction fail with
        # a serialization failure (40001), which is retried, instead of letting an older write resurrect a row.
        connection.driver_connection.isolation_level = psycopg.IsolationLevel.SERIALIZABLE


class PostgreSQLDialect(JsonDocumentDialect):
    name: ClassVar[str] = "postgresql"
    features: ClassVar[Features] = Features(own_privileges=True, identifier_bytes=63)  # NAMEDATALEN - 1
    driver: ClassVar[Driver] = PostgreSQLDriver()
    row_identity: ClassVar[RowIdentity] = RowIdentity("ctid", "ctid::text", "%s::tid")
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

    # pk, data and aux go out escaped (see the module's docstring); state_key stays the event's key_id.
    def upsert_params(self, event: ChangeEvent, row: Row) -> tuple[Any, ...]:
        pk, data, aux = stored_json(event.key_id), stored_json(dumps(row.data)), stored_json(dumps(row.aux))
        return (pk, data, aux, event.version, event.order[1], event.op)

    def key_params(self, event: ChangeEvent) -> tuple[Any, ...]:
        return (stored_json(event.key_id),)

    def delete_params(self, event: ChangeEvent, state: RowState, order: tuple[int, str]) -> tuple[Any, ...]:
        return (stored_json(event.key_id), *order)

    def read_state(self, record: Sequence[Any]) -> RowState:
        # JSONB prints its own normalised text; reparse exactly, unescape, re-encode canonically to match key_id.
        return RowState(key=dumps(item_document(record[0])), order=(int(record[1]), str(record[2])))

    def stored_json(self, text: str) -> str:
        return stored_json(text)

    def load_document(self, value: Any, column: str = "data") -> Any:
        return item_document(value)

    def existing_sql(self, names: Sequence[str]) -> tuple[str, list[Any]]:
        # pg_class: tables and indexes, whatever this user's privileges on them
        p, schema = self.param, self.schema or ""
        marks = ", ".join([p] * len(names)) or "NULL"
        sql = (
            f"SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = {p} UNION ALL "
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {p} AND c.relname IN ({marks})"
        )
        return sql, [schema, schema, *names]

    def dead_letter_params(self, letter: DeadLetter) -> tuple[Any, ...]:
        # TEXT cannot hold NUL; a dead letter must land anyway, so NUL becomes U+FFFD.
        raw, reason = letter.raw.replace("\x00", "\ufffd"), letter.reason.replace("\x00", "\ufffd")
        return (raw, reason, letter.shard_id, letter.sequence_number, letter.failed_at)

    def is_outage(self, exc: BaseException) -> bool:
        if not isinstance(exc, psycopg.Error):
            return False
        state = exc.sqlstate or ""
        return state in _OUTAGE_STATES or state[:2] in _OUTAGE_CLASSES

    def refused_privilege(self, exc: BaseException) -> tuple[str, str | None] | None:
        return ("CREATE", None) if getattr(exc, "sqlstate", None) == "42501" else None  # insufficient_privilege

    def is_ddl_race(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _DDL_RACE_STATES

    def is_row_error(self, exc: BaseException) -> bool:
        if isinstance(exc, UnicodeEncodeError):  # text the client cannot encode (lone surrogates)
            return True
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):  # also raised by the client, without state
            return True
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _ROW_ERROR_STATES
