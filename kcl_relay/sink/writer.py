"""The table writer, and the apply algorithm it runs (kcl_relay/sink/strategy/): what to write, in which order,
under which guards.

dialect.py renders what differs between databases; executor.py runs the statements (connections, retries, bulk
results). For a batch coalesced to one event per key, apply() runs in one transaction (CrateDB: statement by
statement, each durable when acknowledged):

1. REMOVE: write tombstones (guarded upsert), read the rows' current state by primary key, delete those not newer
   than the REMOVE with a guarded delete; rows that changed in between are looked at again.
2. INSERT/MODIFY: read the tombstones of the batch's keys, drop events not newer than their tombstone (a late
   older write must not bring back a removed row), then one guarded bulk upsert installs the full images; its
   answer says which rows the guard kept as they were (stale). Without transactions (CrateDB) the tombstones of
   the rows written are read once more afterwards (strategy/optimistic.py).
3. A row the database rejects for its values is a rejection of that row alone, never of the batch: a statement
   that failed is split down to the rows that fail (executor.bulk), whether one row or all of them failed, and the
   rest of the batch is applied. A rejected upsert is written again with every attribute in aux (CrateDB: what it
   cannot hold as dynamic columns, such as more columns than the table's limit, nesting deeper than its depth limit
   or names it forbids); only a row refused even so, or a rejected REMOVE, becomes a dead letter (with the
   database's reason). What CrateDB is known to refuse goes to aux before the row is sent (crate_types.py: types
   that would be cast, sub-columns past the column limit), so a wide table costs no failed statement per row.
4. Commit. Transient failures retry the whole batch (every statement is guarded, hence idempotent), and so do
   failures about the database's state rather than a row (a missing or changed table, authentication, a privilege:
   Dialect.is_outage), until retry-timeout; anything else (a bug of ours or of the driver) raises at once.

Each step is one statement per chunk of rows (bulk writes, reads by key), whatever the batch size: never one
statement per event. Rows are handled in key order, so concurrent workers lock them in the same order.

Two strategies (kcl_relay/sink/strategy/), chosen once from the target's dialect:

* transactional (PostgreSQL, SQLite): steps 1 and 2 in one transaction on one connection; its isolation is the
  guard against concurrent writers, so the tombstones are read once, before the upsert.
* optimistic (CrateDB: no transactions, reads see the last refresh except primary-key Gets): every read is a
  real-time Get, deletes name the _seq_no/_primary_term they read, upserts are guarded per row and say which rows
  were stale, the tombstones of written rows are read again afterwards (the re-check), data's sub-column types are
  learned and checked (crate_types.py). strategy/optimistic.py argues why concurrent writers converge.

delete-mode=soft (either strategy): a REMOVE is a guarded upsert of its row with cdc_event = 'REMOVE', keeping the
row's data and aux and taking the REMOVE's version. The row itself is the tombstone: a late older write is stale
against it under the upsert's own guard, and a newer INSERT or MODIFY replaces it. So a batch is one guarded bulk
upsert (on PostgreSQL and SQLite one per kind of event, for the counts), with no read, no re-check, no delete and
no tombstone table rows; among concurrent writers the newest event of a key wins atomically in its row, as among
upserts. Readers (reader.py: verify, the full load's prune) skip such rows. A table keeps the mode it was
first written with (the settings table says which; a writer of the other mode stops before writing).

The writer (this module) holds what is not the algorithm: the tables, the prepared statements, the settings it
claims, the row parameters (mapped columns included), dead letters and the tombstone purge.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import Engine

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType
from kcl_relay.cdc.jsonenc import dumps
from kcl_relay.cdc.layout import Row
from kcl_relay.mapping.spec import MappingFile, TableMapping
from kcl_relay.options import TOMBSTONE_RETENTION, default
from kcl_relay.sink import ddl
from kcl_relay.sink.base import ApplyResult, Sink
from kcl_relay.sink.dialect import DELETE_MODES, Dialect
from kcl_relay.sink.executor import StatementExecutor
from kcl_relay.sink.retry import RetryPolicy, describe_error
from kcl_relay.sink.strategy import ApplyStrategy, strategy_for
from kcl_relay.sink.target import TargetSpec

__all__ = ["TableWriter", "dialect_for", "open_sink"]

log = logging.getLogger(__name__)

DEFAULT_TOMBSTONE_RETENTION = timedelta(seconds=TOMBSTONE_RETENTION)  # the tombstone-retention option's
DEFAULT_PURGE_INTERVAL = timedelta(minutes=5)
DEFAULT_CHUNK_SIZE = 1000  # rows per bulk statement: bounds one request's size


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Each dialect's module, imported when a target needs it (each imports its own driver: crate, psycopg, sqlite3).
_DIALECTS = {
    "cratedb": ("kcl_relay.sink.cratedb", "CrateDBDialect"),
    "postgresql": ("kcl_relay.sink.postgresql", "PostgreSQLDialect"),
    "sqlite": ("kcl_relay.sink.sqlite", "SQLiteDialect"),
}


def dialect_for(spec: TargetSpec) -> Dialect:
    module, name = _DIALECTS[spec.dialect]
    dialect: type[Dialect] = getattr(importlib.import_module(module), name)
    return dialect(spec.schema, spec.table)


def _raw_text(event: ChangeEvent) -> str:
    if event.raw is not None:
        return event.raw.data.decode("utf-8", errors="replace")
    return dumps({"eventName": event.op, "Keys": event.key, "NewImage": event.image, "version": event.version})


class TableWriter(Sink):
    """A Sink on one target table. Not thread-safe: use one writer per worker."""

    def __init__(
        self,
        spec: TargetSpec,
        dialect: Dialect | None = None,
        *,
        retry: RetryPolicy | None = None,
        tombstone_retention: timedelta = DEFAULT_TOMBSTONE_RETENTION,
        purge_interval: timedelta = DEFAULT_PURGE_INTERVAL,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        clock: Callable[[], datetime] = _utcnow,
        engine: Engine | None = None,
        mapping: MappingFile | TableMapping | None = None,
        delete_mode: str | None = default("delete-mode"),
        strategy: type[ApplyStrategy] | None = None,
    ) -> None:
        if delete_mode is not None and delete_mode not in DELETE_MODES:
            raise ValueError(f"delete_mode must be one of {', '.join(DELETE_MODES)}, not {delete_mode!r}")
        self.spec = spec
        self.delete_mode = delete_mode  # None: the target table's own (a redrive); see _claim_delete_mode
        self.soft = delete_mode == "soft"
        self.dialect = dialect or dialect_for(spec)
        self.tombstone_retention = tombstone_retention
        self.purge_interval = purge_interval
        self.chunk_size = chunk_size
        self.clock = clock
        self.executor = StatementExecutor(spec, self.dialect, retry or RetryPolicy(), engine)
        self._key_names: tuple[str, ...] | None = None
        self._dead_letter_table = False
        self._sql: dict[str, str] = {}
        self._last_purge: float | None = None
        given = mapping.for_table(spec.table) if isinstance(mapping, MappingFile) else mapping
        self._given_mapping = None if given is None or given == TableMapping() else given
        self.mapping: TableMapping | None = None  # the table's, once ensure_table() settled it (mapped_table.py)
        # the apply algorithm; by default the one the dialect needs (given: tests run either on any database)
        self.strategy: ApplyStrategy = (strategy or strategy_for(self.dialect))(self)

    @property
    def statements(self) -> int:
        """Database calls made so far: for tests and metrics."""
        return self.executor.statements

    @property
    def retries(self) -> int:
        """Transactions retried after transient failures so far: for metrics."""
        return self.executor.retries

    # ---- Sink ----
    def ensure_table(self, key_types: Mapping[str, KeyType]) -> None:
        from kcl_relay.sink.mapped_table import settle_mapping

        self.dialect.check_key(key_types)
        if self._given_mapping is not None:
            self._given_mapping.check_key(key_types)
        # Only what is missing: a user with DQL and DML alone runs once an admin created the tables (docs/deploy.md).
        ddl.ensure(self.executor, ddl.plan(self.dialect, key_types, settings=False, mapping=self._given_mapping))
        self._dead_letter_table = True
        self.mapping = settle_mapping(self, self._given_mapping)
        self.soft = self._claim_delete_mode() == "soft"
        names = tuple(sorted(key_types))
        self._key_names = names
        self._sql = {
            "upsert": self.dialect.upsert_sql(
                names, self._mapped_columns(), soft=self.soft, partition=self._partition()
            ),
            "delete": self.dialect.delete_sql(names),
            "tombstone": self.dialect.tombstone_upsert_sql(),
        }

    def apply(self, events: Sequence[ChangeEvent]) -> ApplyResult:
        if not events:
            return ApplyResult()
        if self._key_names is None:
            self.ensure_table(events[0].key_types)
        attempts = 0

        def attempt(cursor: Any) -> ApplyResult:
            nonlocal attempts
            attempts += 1
            self.strategy.begin_attempt(first=attempts == 1)
            return self.strategy.apply(cursor, events)

        result = self.executor.transaction(attempt)
        self.strategy.committed()
        if result.dead_letters:
            log.warning("%d record(s) dead-lettered in %s", len(result.dead_letters), self.spec.qualified_table)
        self._maybe_purge()
        return result

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if not self._dead_letter_table:
            ddl.ensure(self.executor, ddl.plan(self.dialect, None, settings=False))
            self._dead_letter_table = True
        self.executor.transaction(lambda cursor: self._store_letters(cursor, letters))

    def claim_source_table(self, dynamodb_table: str) -> str:
        ddl.ensure(self.executor, ddl.plan(self.dialect, None, settings=True)[-1:])  # the settings table

        def claim(cursor: Any) -> str:
            self.executor.execute(cursor, self.dialect.claim_setting_sql(), ("source_table", dynamodb_table))
            rows = self.executor.fetch(cursor, self.dialect.setting_sql(), ("source_table",))
            return str(rows[0][0])

        return self.executor.transaction(claim)

    def _claim_delete_mode(self) -> str:
        """The table's delete mode: the first writer's (in the settings table, like the source table). A table is
        one or the other for good: hard deletes keep tombstones beside the rows, soft deletes keep the rows, and the
        guards of one do not know the other's. A writer of the other mode stops here, before writing anything."""
        # no mode given (a redrive): the table's, the default (hard) for a table without one
        wanted = self.delete_mode or default("delete-mode")
        ddl.ensure(self.executor, ddl.plan(self.dialect, None, settings=True)[-1:])  # the settings table, if missing

        def claim(cursor: Any) -> str:
            self.executor.execute(cursor, self.dialect.claim_setting_sql(), ("delete_mode", wanted))
            return str(self.executor.fetch(cursor, self.dialect.setting_sql(), ("delete_mode",))[0][0])

        stored = self.executor.transaction(claim)
        if self.delete_mode is not None and stored != self.delete_mode:
            raise ValueError(
                f"{self.spec.qualified_table} is written with delete-mode={stored}, not {self.delete_mode}: "
                "a table keeps the mode it was first written with"
            )
        return stored

    def purge_tombstones(self) -> int:
        """Delete tombstones older than the retention; returns how many (when the database says)."""
        if self._key_names is None:
            return 0
        cutoff = self.dialect.timestamp(self.clock() - self.tombstone_retention)
        sql = self.dialect.tombstone_purge_sql()
        purged = self.executor.transaction(lambda cursor: max(self.executor.execute(cursor, sql, (cutoff,)), 0))
        self._last_purge = time.monotonic()
        return purged

    def close(self) -> None:
        self.executor.close()

    # ---- what the strategies use ----
    def _letter(self, event: ChangeEvent, reason: str) -> DeadLetter:
        position = event.position
        return DeadLetter(_raw_text(event), reason, position.shard_id, position.sequence_number, self.clock())

    def _problem(self, event: ChangeEvent) -> str | None:
        assert self._key_names is not None
        if tuple(sorted(event.key)) != self._key_names:
            return f"key attributes {sorted(event.key)} do not match the table key {list(self._key_names)}"
        if event.op != "REMOVE" and event.image is None:
            return f"{event.op} without NewImage"
        return self.dialect.key_rejection(event)

    # ---- mapped columns (kcl_relay/mapping) ----
    def _partition(self) -> str | None:
        partition = self.mapping.partition if self.mapping is not None else None
        return partition.name if partition is not None else None

    def _mapped_columns(self) -> list[tuple[str, str]]:
        """(quoted name, placeholder) of the mapped columns, after the row's own columns in every upsert."""
        from kcl_relay.mapping.sql import placeholder

        columns = self.mapping.columns if self.mapping is not None else ()
        return [(f'"{column.name}"', placeholder(self.dialect.name, column)) for column in columns]

    def _params(self, event: ChangeEvent, layout: Row) -> tuple[Any, ...]:
        """The dialect's row parameters, then the mapped columns' (NULL where the row has no value)."""
        params = self.dialect.upsert_params(event, layout)
        if self.mapping is None:
            return params
        from kcl_relay.mapping.sql import param

        values = layout.columns or {}
        name, stored = self.dialect.name, self.dialect.stored_json
        return (*params, *(param(name, column, values.get(column.name), stored) for column in self.mapping.columns))

    def _store_letters(self, cursor: Any, letters: Sequence[DeadLetter]) -> None:
        rows = [self.dialect.dead_letter_params(letter) for letter in letters]
        bulk = self.executor.bulk(cursor, self.dialect.dead_letter_sql(), rows, self.chunk_size)
        if bulk.rejected:
            reason = next(iter(bulk.rejected.values()))
            raise RuntimeError(f"{self.dialect.name} refused to store dead letters: {reason}")

    def _maybe_purge(self) -> None:
        if self.soft:
            return  # no tombstones: a soft REMOVE is its row
        due = self._last_purge is None or time.monotonic() - self._last_purge >= self.purge_interval.total_seconds()
        if not due:
            return
        try:
            purged = self.purge_tombstones()
        except Exception as exc:  # housekeeping must not fail a batch that is already committed
            log.warning("purging tombstones failed: %s", describe_error(exc))
            self._last_purge = time.monotonic()
        else:
            if purged:
                log.info("purged %d tombstone(s) older than %s", purged, self.tombstone_retention)


def open_sink(spec: TargetSpec, **options: Any) -> Sink:
    """A Sink for the target; options go to TableWriter (retry, tombstone_retention, purge_interval, ...)."""
    return TableWriter(spec, **options)
