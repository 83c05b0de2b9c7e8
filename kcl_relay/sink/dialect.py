"""The one interface behind which database dialects differ: SQL text, parameter and result shapes, driver habits.

The writer (writer.py, strategy/) holds the apply algorithm and never spells SQL itself. Every table a target uses:

* the target ``"schema"."table"``: ``pk`` (key attributes), ``data`` (queryable attributes), ``aux`` (attributes
  kept verbatim), plus our metadata ``cdc_version`` (ApproximateCreationDateTime in µs), ``cdc_order``
  (position.order_token, the tie-breaker) and ``cdc_event`` (INSERT or MODIFY; REMOVE for a row kept by
  delete-mode=soft, which readers skip). Item attributes live inside
  pk/data/aux, so the metadata names cannot clash with them (CrateDB also forbids top-level names starting '_').
* ``"<table>__tombstones"``: one row per removed key (key_id, cdc_version, cdc_order, deleted_at), beside the
  target so the user's queries on the target never see them.
* ``"<table>__deadletters"``: records that could not be decoded or that the database rejected.

Every write is guarded in SQL: it applies only when its (cdc_version, cdc_order) is >= what the row holds, so
concurrent workers cannot regress a row whatever the batch boundaries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType
from kcl_relay.cdc.jsonenc import loads
from kcl_relay.cdc.layout import Row

__all__ = [
    "DEADLETTERS_SUFFIX",
    "DELETE_MODES",
    "ROW_COLUMNS",
    "SOFT_REMOVED",
    "TOMBSTONES_SUFFIX",
    "BulkOutcome",
    "Dialect",
    "Driver",
    "Features",
    "JsonDocumentDialect",
    "RowIdentity",
    "RowState",
    "quote_ident",
]

ROW_COLUMNS = ("pk", "data", "aux", "cdc_version", "cdc_order", "cdc_event")
TOMBSTONES_SUFFIX = "__tombstones"
DEADLETTERS_SUFFIX = "__deadletters"
SETTINGS_SUFFIX = "__relay"
SAVEPOINT = "kcl_relay_sp"
# delete-mode=soft: a removed item's row stays, cdc_event says so (beside INSERT and MODIFY), with its version.
SOFT_REMOVED = "REMOVE"
DELETE_MODES = ("hard", "soft")


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What one bulk statement reports: per-row counts (a negative one marks a rejected row) when the database
    says, else only the total; and the database's message for rejected rows, when it gives one."""

    counts: list[int] | None
    total: int = 0
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Features:
    """What a database can do, as far as the writer, the readers and the tools must know (not how to say it in
    SQL: that is the Dialect's)."""

    # One transaction per apply isolates its reads from concurrent writers: the transactional strategy. Without
    # (CrateDB) the optimistic one re-checks the tombstones after an upsert (kcl_relay/sink/strategy/).
    transactions: bool = True
    # Whether a failed statement poisons the transaction until rolled back to a savepoint (PostgreSQL).
    savepoints: bool = True
    # Statements by key that may run at once on connections of their own (only without transactions).
    parallel_reads: int = 1
    # A database server, which may be down for a while (then connecting is retried), not a local file.
    server: bool = True
    # A mapping's partition-by partitions the target table (CrateDB); ignored elsewhere.
    partitions: bool = False
    # Users and privileges (not a local file): the start checks what this user may do (ddl.access_problem).
    users: bool = True
    # A user can ask the database for its own privileges (PostgreSQL); else a read and a write that touch no row
    # tell (CrateDB: sys.privileges is the superuser's).
    own_privileges: bool = False
    # How many bytes of an identifier the database keeps (PostgreSQL: NAMEDATALEN - 1), or None: all of them.
    identifier_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RowIdentity:
    """A column naming each row of a table without a primary key (the dead letters), good for a DELETE right after
    the read: the column, how a SELECT names it, and the placeholder a DELETE compares it with."""

    column: str
    selected: str
    param: str


@dataclass(frozen=True, slots=True)
class RowState:
    """What a target row holds now, as far as the guards care."""

    key: Hashable  # comparable with Dialect.state_key(event)
    order: tuple[int, str]  # (cdc_version, cdc_order)
    token: tuple[Any, ...] = ()  # what a guarded delete needs besides the key (CrateDB: _seq_no, _primary_term)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Driver:
    """The DBAPI driver's habits for one database: connection setup, transaction control, bulk calls. Stateless:
    one instance per dialect class (Dialect.driver), used by the executor alone."""

    def prepare(self, connection: Any) -> None:
        """Adjust a fresh DBAPI connection (SQLAlchemy pool proxy) before first use."""
        return None

    def begin(self, cursor: Any) -> None:
        """Start the transaction that apply() commits; drivers that begin implicitly do nothing."""
        return None

    def commit(self, connection: Any) -> None:
        connection.commit()

    def rollback(self, connection: Any) -> None:
        connection.rollback()

    def savepoint(self, cursor: Any) -> None:
        cursor.execute(f"SAVEPOINT {SAVEPOINT}")

    def release(self, cursor: Any) -> None:
        cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")

    def rollback_to(self, cursor: Any) -> None:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")

    def run_many(self, cursor: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> BulkOutcome:
        """Execute `sql` once per row in one bulk call. Raises if the bulk failed as a whole."""
        cursor.executemany(sql, rows)
        return BulkOutcome(counts=None, total=max(int(cursor.rowcount), 0))

    def run_one(self, cursor: Any, sql: str, row: tuple[Any, ...]) -> int:
        cursor.execute(sql, row)
        return int(cursor.rowcount)

    def fetch(self, cursor: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


class Dialect(ABC):
    """Renders DDL/DML, adapts parameters and classifies errors for one target table. What the database can do is
    in `features`; its driver's habits are in `driver`."""

    name: ClassVar[str]
    features: ClassVar[Features] = Features()
    driver: ClassVar[Driver] = Driver()
    param: ClassVar[str] = "?"  # the driver's placeholder
    keys_per_select: ClassVar[int] = 500  # bounded IN lists keep statements within every driver's limits
    row_identity: ClassVar[RowIdentity] = RowIdentity("rowid", "rowid", "?")

    def __init__(self, schema: str | None, table: str) -> None:
        self.schema = schema
        self.table = table

    def relation(self, suffix: str = "") -> str:
        name = quote_ident(self.table + suffix)
        return f"{quote_ident(self.schema)}.{name}" if self.schema else name

    def placeholders(self, count: int) -> str:
        return ", ".join([self.param] * count)

    def keys_per_read(self, key_names: Sequence[str]) -> int:
        """How many keys one SELECT by key may name (state_sql, tombstone_select_sql with single-column keys)."""
        return self.keys_per_select

    def column_types_sql(self) -> str | None:
        """SELECT (column_name, data_type) of the target's `data` sub-columns, for databases that type them on the
        fly and cast later values silently (CrateDB, see crate_types.py); None where values keep their type."""
        return None

    def stored_json(self, text: str) -> str:
        """JSON text (a canonical key, data or aux) as this database is sent it; load_document() undoes it."""
        return text

    def load_document(self, value: Any, column: str = "data") -> Any:
        """A stored pk, data or aux (`column`; JSON text, or what the driver parsed) as the item holds it: undoes
        whatever this dialect changed to store it (PostgreSQL: the NUL escape; CrateDB: aux's name escape)."""
        return loads(value) if isinstance(value, str) else value

    def key_rejection(self, event: ChangeEvent) -> str | None:
        """Why this dialect can never store the event's key (checked before any statement), or None."""
        return None

    # ---- DDL ----
    def check_key(self, key_types: Mapping[str, KeyType]) -> None:
        """Raise ValueError when this dialect cannot hold such a key."""
        if not key_types:
            raise ValueError("the table key has no attributes")

    @abstractmethod
    def create_tables(self, key_types: Mapping[str, KeyType]) -> list[str]:
        """CREATE ... IF NOT EXISTS statements for the target and tombstone tables."""

    @abstractmethod
    def create_dead_letter_table(self) -> str:
        """CREATE ... IF NOT EXISTS for the dead-letter table (needed before any key is known)."""

    # ---- target rows ----
    @abstractmethod
    def upsert_sql(
        self,
        key_names: Sequence[str],
        mapped: Sequence[tuple[str, str]] = (),
        soft: bool = False,
        partition: str | None = None,
    ) -> str:
        """Guarded upsert of one row (installs the full image) with upsert_params(), then the mapped columns'
        values: `mapped` is their (quoted name, placeholder), from the table's mapping (kcl_relay/mapping). `soft`
        (delete-mode=soft): a REMOVE's row (cdc_event = 'REMOVE', see soft_remove_row) keeps the stored data, aux and
        mapped columns, and takes the REMOVE's version and cdc_event, under the same guard. `partition`: the
        partition column a CrateDB table's primary key holds besides pk (mapping partition-by); ignored elsewhere."""

    @abstractmethod
    def upsert_params(self, event: ChangeEvent, row: Row) -> tuple[Any, ...]: ...

    @abstractmethod
    def state_sql(self, key_names: Sequence[str], count: int) -> str:
        """SELECT the state (read_state) of up to `count` rows, each key given by key_params()."""

    @abstractmethod
    def key_params(self, event: ChangeEvent) -> tuple[Any, ...]: ...

    @abstractmethod
    def state_key(self, event: ChangeEvent) -> Hashable: ...

    @abstractmethod
    def read_state(self, record: Sequence[Any]) -> RowState: ...

    @abstractmethod
    def delete_sql(self, key_names: Sequence[str]) -> str:
        """Delete one row, but only if it still is (or is older than) what delete_params() names."""

    @abstractmethod
    def delete_params(self, event: ChangeEvent, state: RowState, order: tuple[int, str]) -> tuple[Any, ...]:
        """Delete the event's row if it still is `state`, or at least not newer than `order`."""

    # ---- tombstones ----
    @abstractmethod
    def tombstone_upsert_sql(self) -> str: ...

    def tombstone_params(self, event: ChangeEvent, deleted_at: datetime) -> tuple[Any, ...]:
        return (event.key_id, event.version, event.position.order_token, self.timestamp(deleted_at))

    def tombstone_select_sql(self, count: int) -> str:
        return (
            f"SELECT key_id, cdc_version, cdc_order FROM {self.relation(TOMBSTONES_SUFFIX)} "
            f"WHERE key_id IN ({self.placeholders(count)})"
        )

    def tombstone_purge_sql(self) -> str:
        return f"DELETE FROM {self.relation(TOMBSTONES_SUFFIX)} WHERE deleted_at < {self.param}"

    # ---- the relay's own settings (one decision shared by every processor and worker) ----
    def create_settings_table(self) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.relation(SETTINGS_SUFFIX)} (name TEXT PRIMARY KEY, value TEXT)"

    def claim_setting_sql(self) -> str:
        """First writer wins: later claims of the same name change nothing."""
        return (
            f"INSERT INTO {self.relation(SETTINGS_SUFFIX)} (name, value) VALUES ({self.placeholders(2)}) "
            "ON CONFLICT (name) DO NOTHING"
        )

    def setting_sql(self) -> str:
        return f"SELECT value FROM {self.relation(SETTINGS_SUFFIX)} WHERE name = {self.param}"

    def refresh_sql(self, relation: str) -> str | None:
        """What makes a reader's queries see every acknowledged write to `relation`, or None: they see them anyway."""
        return None

    def table_exists_sql(self, name: str) -> tuple[str, tuple[Any, ...]]:
        """SELECT a row if the table `name` exists in the target's schema (and this user can see it)."""
        p = self.param
        sql = f"SELECT table_name FROM information_schema.tables WHERE table_schema = {p} AND table_name = {p}"
        return sql, (self.schema or "", name)

    def existing_sql(self, names: Sequence[str]) -> tuple[str, list[Any]]:
        """One query of the tables and indexes among `names` (and the schema) that exist and this user can see."""
        p = self.param
        marks = ", ".join([p] * len(names)) or "NULL"
        sql = f"SELECT table_name FROM information_schema.tables WHERE table_schema = {p} AND table_name IN ({marks})"
        return sql, [self.schema or "", *names]

    # ---- dead letters ----
    def dead_letter_sql(self) -> str:
        return (
            f"INSERT INTO {self.relation(DEADLETTERS_SUFFIX)} (raw, reason, shard_id, sequence_number, failed_at) "
            f"VALUES ({self.placeholders(5)})"
        )

    def dead_letter_params(self, letter: DeadLetter) -> tuple[Any, ...]:
        return (letter.raw, letter.reason, letter.shard_id, letter.sequence_number, self.timestamp(letter.failed_at))

    def timestamp(self, value: datetime) -> Any:
        return value

    def is_column_type_race(self, exc: BaseException) -> bool:
        """Whether `exc` says another writer just created a sub-column with another type (see column_types_sql)."""
        return False

    def is_stale(self, message: str) -> bool:
        """Whether a row's error says the guard kept a newer row (CrateDB's upsert fails stale rows on purpose, so
        its bulk answer tells them from writes): counted as not written, never as a rejection."""
        return False

    def is_version_conflict(self, message: str) -> bool:
        """Whether a bulk row's error says the row's version was not the one the statement expected."""
        return False

    def row_rejection(self, message: str) -> Exception:
        """The driver's exception for a row a bulk statement rejected with `message` (see BulkOutcome.errors)."""
        return RuntimeError(message)

    @abstractmethod
    def is_row_error(self, exc: BaseException) -> bool:
        """Whether `exc` is the database rejecting the values of one row (-> aux, else dead letter), not the
        statement."""

    def is_outage(self, exc: BaseException) -> bool:
        """Whether `exc` is about the database's state, not a row nor our SQL: a missing or changed table or schema,
        authentication, privileges, a read-only database. Retried like an outage (someone can fix it meanwhile)."""
        return False

    def refused_privilege(self, exc: BaseException) -> tuple[str, str | None] | None:
        """(the privilege, the user the message names or None) when `exc` refused a CREATE for want of a privilege,
        else None."""
        return None

    def is_ddl_race(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by CREATE ... IF NOT EXISTS, says another worker created the same object at the
        same moment: retried, the next attempt finds it there."""
        return False


class JsonDocumentDialect(Dialect):
    """PostgreSQL and SQLite: pk, data and aux are JSON documents, pk keyed by canonical JSON (the event's key_id).

    Their upsert takes ``ON CONFLICT ... DO UPDATE ... WHERE``, so the guard is one row-value comparison.
    """

    json_param: ClassVar[str] = "?"  # placeholder for a JSON text parameter (PostgreSQL casts it to JSONB)
    pk_output: ClassVar[str] = "pk"  # the pk as canonical-able JSON text in a SELECT list
    _guard = "(cur.cdc_version, cur.cdc_order) <= (excluded.cdc_version, excluded.cdc_order)"

    def _upsert(self, relation: str, columns: Sequence[str], values: str, conflict: str) -> str:
        updates = ", ".join(f"{column} = excluded.{column}" for column in columns if column != conflict)
        return (
            f"INSERT INTO {relation} AS cur ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates} WHERE {self._guard}"
        )

    def upsert_sql(
        self,
        key_names: Sequence[str],
        mapped: Sequence[tuple[str, str]] = (),
        soft: bool = False,
        partition: str | None = None,
    ) -> str:
        j, p = self.json_param, self.param
        columns = (*ROW_COLUMNS, *(name for name, _ in mapped))
        values = f"{j}, {j}, {j}, {p}, {p}, {p}" + "".join(f", {placeholder}" for _, placeholder in mapped)
        sql = self._upsert(self.relation(), columns, values, "pk")
        if soft:
            for column in ("data", "aux", *(name for name, _ in mapped)):
                removed = f"excluded.cdc_event = '{SOFT_REMOVED}'"
                kept = f"{column} = CASE WHEN {removed} THEN cur.{column} ELSE excluded.{column} END"
                sql = sql.replace(f"{column} = excluded.{column}", kept, 1)
        return sql

    def tombstone_upsert_sql(self) -> str:
        columns = ("key_id", "cdc_version", "cdc_order", "deleted_at")
        return self._upsert(self.relation(TOMBSTONES_SUFFIX), columns, self.placeholders(4), "key_id")

    def state_sql(self, key_names: Sequence[str], count: int) -> str:
        keys = ", ".join([self.json_param] * count)
        return f"SELECT {self.pk_output}, cdc_version, cdc_order FROM {self.relation()} WHERE pk IN ({keys})"

    def key_params(self, event: ChangeEvent) -> tuple[Any, ...]:
        return (event.key_id,)

    def state_key(self, event: ChangeEvent) -> Hashable:
        return event.key_id

    def delete_sql(self, key_names: Sequence[str]) -> str:
        p = self.param
        return f"DELETE FROM {self.relation()} WHERE pk = {self.json_param} AND (cdc_version, cdc_order) <= ({p}, {p})"

    def delete_params(self, event: ChangeEvent, state: RowState, order: tuple[int, str]) -> tuple[Any, ...]:
        # Guarded by the deleting order itself: a row that changed since it was read is left alone if newer.
        return (event.key_id, *order)
