"""The apply algorithm, the same for every database: what to write, in which order, under which guards.

dialect.py renders what differs between databases; executor.py runs the statements (connections, retries, bulk
results). For a batch coalesced to one event per key, apply() runs in one transaction (CrateDB: statement by
statement, each durable when acknowledged):

1. REMOVE: write tombstones (guarded upsert), read the rows' current state by primary key, delete those not newer
   than the REMOVE with a guarded delete; rows that changed in between are looked at again.
2. INSERT/MODIFY: read the tombstones of the batch's keys, drop events not newer than their tombstone (a late
   older write must not bring back a removed row), then one guarded bulk upsert installs the full images; its
   answer says which rows the guard kept as they were (stale). Without transactions (CrateDB) the tombstones of
   the rows written are read once more afterwards, see below.
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

Two strategies, chosen by Dialect.transactions:

* transactional (PostgreSQL, SQLite): steps 1 and 2 in one transaction on one connection; its isolation is the
  guard against concurrent writers, so the tombstones are read once, before the upsert.
* optimistic (CrateDB: no transactions, reads see the last refresh except primary-key Gets): every read is a
  real-time Get, deletes name the _seq_no/_primary_term they read, upserts are guarded per row and say which rows
  were stale, the tombstones of written rows are read again afterwards (the re-check), data's sub-column types are
  learned and checked (crate_types.py). Why that converges: below.

delete-mode=soft (either strategy): a REMOVE is a guarded upsert of its row with cdc_event = 'REMOVE', keeping the
row's data and aux and taking the REMOVE's version. The row itself is the tombstone: a late older write is stale
against it under the upsert's own guard, and a newer INSERT or MODIFY replaces it. So a batch is one guarded bulk
upsert (on PostgreSQL and SQLite one per kind of event, for the counts), with no read, no re-check, no delete and
no tombstone table rows; among concurrent writers the newest event of a key wins atomically in its row, as among
upserts below. Readers (reader.py: verify, the full load's prune) skip such rows. A table keeps the mode it was
first written with (the settings table says which; a writer of the other mode stops before writing).

Why concurrent writers converge without transactions (CrateDB)
--------------------------------------------------------------
Two workers may apply events of the same key at once: while a lease moves, during resharding, or when a full load
runs beside the stream. Every read below is a real-time primary-key Get (it sees every acknowledged write), and
every write is atomic per row. Then, for any key:

* Upserts: the guard (install only if (cdc_version, cdc_order) >= the row's) is evaluated by CrateDB per row,
  atomically with the write (ON CONFLICT ... DO UPDATE with CASE on the stored document, retried by CrateDB on a
  version conflict). So among upserts the newest always ends in the row, in any interleaving.
* A REMOVE first makes its tombstone durable (guarded the same way: the newest REMOVE wins), then reads the row and
  deletes it only if it is not newer than the REMOVE, by key + _seq_no + _primary_term. If anything wrote the row
  in between, the delete matches nothing and the row is read again: a delete never removes a newer write.
* An upsert U older than a REMOVE R (U.order < R.order) must not leave a row behind. U reads the tombstones before
  writing and again after writing (the re-check). If U's re-check sees R's tombstone, U deletes its row itself. If it
  does not, the re-check ran before R's tombstone was written, so U's write came before R's tombstone too, and R's
  state read, which comes after its tombstone, sees U's row and deletes it. Either way the row is gone.
* An upsert newer than a REMOVE wins: the REMOVE deletes only rows not newer than itself, and the tombstone filter
  only drops upserts not newer than the tombstone.
* An upsert the guard found stale wrote nothing, so it has nothing to undo: its re-check is skipped. The row holds a
  newer event, whose own writer re-checks it.
So the final row of every key is the newest event's image (or no row when that is a REMOVE), as in one serial run.
tests/support/sink_suite.py races two writers on one key set to check it on every database. PostgreSQL (SERIALIZABLE)
and SQLite (one writer at a time) get the same result from their transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import Engine

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType
from kcl_relay.cdc.jsonenc import dumps
from kcl_relay.cdc.layout import Row, split
from kcl_relay.mapping.spec import MappingFile, TableMapping
from kcl_relay.options import TOMBSTONE_RETENTION, default
from kcl_relay.sink import ddl
from kcl_relay.sink.base import ApplyResult, Sink
from kcl_relay.sink.crate_types import DataTypes
from kcl_relay.sink.dialect import DELETE_MODES, Dialect
from kcl_relay.sink.executor import BulkResult, Read, StatementExecutor
from kcl_relay.sink.retry import RetryPolicy, TransientError, describe_error
from kcl_relay.sink.target import TargetSpec

__all__ = ["TableWriter", "dialect_for", "open_sink"]

log = logging.getLogger(__name__)

DEFAULT_TOMBSTONE_RETENTION = timedelta(seconds=TOMBSTONE_RETENTION)  # the tombstone-retention option's
DEFAULT_PURGE_INTERVAL = timedelta(minutes=5)
DEFAULT_CHUNK_SIZE = 1000  # rows per bulk statement: bounds one request's size
MAX_DELETE_ROUNDS = 5


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def dialect_for(spec: TargetSpec) -> Dialect:
    if spec.dialect == "cratedb":
        from kcl_relay.sink.cratedb import CrateDBDialect

        return CrateDBDialect(spec.schema, spec.table)
    if spec.dialect == "postgresql":
        from kcl_relay.sink.postgresql import PostgreSQLDialect

        return PostgreSQLDialect(spec.schema, spec.table)
    from kcl_relay.sink.sqlite import SQLiteDialect

    return SQLiteDialect(spec.schema, spec.table)


def _key_id(event: ChangeEvent) -> str:
    return event.key_id


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
        self._types = DataTypes() if self.dialect.column_types_sql() else None
        self._dead_letter_table = False
        self._sql: dict[str, str] = {}
        self._last_purge: float | None = None
        given = mapping.for_table(spec.table) if isinstance(mapping, MappingFile) else mapping
        self._given_mapping = None if given is None or given == TableMapping() else given
        self.mapping: TableMapping | None = None  # the table's, once ensure_table() settled it (mapped_table.py)

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
            if self._types is not None:
                if attempts > 1:  # the table may have changed under the failed attempt (dropped, recreated)
                    self._types.loaded = False
                self._types.begin()
            return self._apply(cursor, events)

        result = self.executor.transaction(attempt)
        if self._types is not None:
            self._types.commit()  # only now: a failed attempt's assumptions must not outlive it
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

    # ---- the algorithm ----
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

    def _apply(self, cursor: Any, events: Sequence[ChangeEvent]) -> ApplyResult:
        result = ApplyResult()
        letters: list[DeadLetter] = []
        upserts: list[ChangeEvent] = []
        removes: list[ChangeEvent] = []
        for event in events:
            problem = self._problem(event)
            if problem is not None:
                letters.append(self._letter(event, problem))
            else:
                (removes if event.op == "REMOVE" else upserts).append(event)
        # One key order for every worker: concurrent transactions then lock rows in the same order (no deadlock).
        removes.sort(key=_key_id)
        upserts.sort(key=_key_id)
        if self.soft:
            # delete-mode=soft: a REMOVE is an upsert of its row flagged removed, under the same guard, so the
            # newest event of a key wins in its row alone (atomic per row): no tombstone to read or write, no
            # re-check, no delete. Where the bulk answer counts per row (CrateDB), one statement for all of them.
            groups = [removes, upserts] if self.dialect.transactions else [removes + upserts]
            for group in groups:
                self._upsert(cursor, sorted(group, key=_key_id), result, letters)
        else:
            # REMOVEs and upserts in turn. Running the REMOVEs on a second cursor beside the upserts (they are about
            # different keys) was measured slower on a CrateDB with busy cores: 360-1,051 against 419-1,341
            # events/s in three interleaved rounds (benchmarks/results/cratedb_strategies.md), so it is not done.
            self._remove(cursor, removes, result, letters)
            self._upsert(cursor, upserts, result, letters)
        if letters:
            self._store_letters(cursor, letters)
        result.dead_letters = letters
        return result

    def _bulk(
        self, cursor: Any, sql: str, rows: Sequence[tuple[Any, ...]], version_checked: bool = False
    ) -> BulkResult:
        return self.executor.bulk(cursor, sql, rows, self.chunk_size, version_checked)

    def _remove(self, cursor: Any, removes: list[ChangeEvent], result: ApplyResult, letters: list[DeadLetter]) -> None:
        if not removes:
            return
        now = self.clock()
        tombstones = [self.dialect.tombstone_params(event, now) for event in removes]
        pending = self._accepted(removes, self._bulk(cursor, self._sql["tombstone"], tombstones), letters)
        deleted, stale = self._delete_older(cursor, [(event, event.order) for event in pending], letters)
        result.deleted += deleted
        result.skipped_stale += stale

    def _delete_older(
        self, cursor: Any, targets: list[tuple[ChangeEvent, tuple[int, str]]], letters: list[DeadLetter]
    ) -> tuple[int, int]:
        """Delete each event's row unless it is newer than the order given with it; returns (deleted, stale).

        The row's state is read first (CrateDB: a real-time Get; a guarded DELETE by query would not see rows
        written since the last refresh), then deleted by key with a guard. A row that changed in between is not
        deleted, and is looked at again."""
        deleted = stale = 0
        pending = targets
        for _ in range(MAX_DELETE_ROUNDS):
            states = self._states(cursor, [event for event, _ in pending])
            chosen, params = [], []
            for event, order in pending:
                state = states.get(self.dialect.state_key(event))
                if state is None:
                    deleted += 1  # nothing (left) to delete: the tombstone is the whole effect
                elif state.order > order:
                    stale += 1
                else:
                    chosen.append((event, order))
                    params.append(self.dialect.delete_params(event, state, order))
            if not chosen:
                return deleted, stale
            bulk = self._bulk(cursor, self._sql["delete"], params, version_checked=True)
            pending = []
            for index, (event, order) in enumerate(chosen):
                count = bulk.counts[index]
                if index in bulk.rejected:
                    letters.append(self._letter(event, bulk.rejected[index]))
                elif count is None or count > 0:
                    deleted += 1  # a count-less bulk: the SQL guard decided, nothing to re-examine
                else:
                    pending.append((event, order))  # the row changed after it was read: look again
            if not pending:
                return deleted, stale
        raise TransientError(f"{len(pending)} row(s) kept changing while being deleted")

    def _upsert(self, cursor: Any, upserts: list[ChangeEvent], result: ApplyResult, letters: list[DeadLetter]) -> None:
        if not upserts:
            return
        if self._types is not None and not self._types.loaded:
            self._learn_types(cursor)
        # Only the tombstones are read first, not the rows: whether an image is newer than its row is the upsert's
        # own guard's decision (atomic per row, in any interleaving), and the upsert says which rows it kept as they
        # were (CrateDB fails them on purpose, cratedb.py). So a read of the rows first could only skip sending a
        # stale image, never change what a row ends as; on CrateDB it cost more than the upsert it guarded.
        # The tombstones are read first because a late older write must never bring a removed row back, not even
        # for a moment; the re-check below is what makes that hold against a concurrent REMOVE.
        tombstones = {} if self.soft else self._tombstones(cursor, upserts)
        live: list[ChangeEvent] = []
        rows: list[tuple[Any, ...]] = []
        layouts: list[Row] = []
        alone: list[bool] = []  # rows that create sub-columns: one statement each (see crate_types.py)
        for event in upserts:
            removed = tombstones.get(event.key_id)
            if removed is not None and removed >= event.order:
                result.skipped_stale += 1
                continue
            if event.op == "REMOVE":  # delete-mode=soft: the key alone; the guarded upsert keeps the stored item
                layout, grows = Row(pk=dict(event.key), data={}, aux={}), False
            else:
                assert event.image is not None  # checked by _problem
                layout, grows = split(event.key, event.image, self.mapping), False
                result.misfits += layout.misfits
                if self._types is not None:
                    layout, grows = self._fit(layout)
            try:
                rows.append(self._params(event, layout))
            except (TypeError, ValueError) as exc:
                letters.append(self._letter(event, f"cannot store in {self.dialect.name}: {describe_error(exc)}"))
                continue
            live.append(event)
            layouts.append(layout)
            alone.append(grows)
        bulk = self._bulk_upsert(cursor, rows, alone)
        written: list[ChangeEvent] = []
        unknown = 0

        def done(event: ChangeEvent, rows: int = 1) -> None:
            if event.op == "REMOVE":  # delete-mode=soft: the row is flagged removed
                result.deleted += rows
            else:
                result.upserted += rows

        for index, event in enumerate(live):
            if index in bulk.rejected:
                if self._store_in_aux(cursor, event, layouts[index], bulk.rejected[index]):
                    written.append(event)
                    done(event)
                else:
                    letters.append(self._letter(event, bulk.rejected[index]))
                continue
            count = bulk.counts[index]
            if count is None:
                unknown += 1
            elif count > 0:
                done(event)
            else:
                result.skipped_stale += 1  # the guard kept a newer row
                continue  # nothing of ours is in the row: nothing for the re-check to undo
            written.append(event)
        if live:  # count-less bulks (PostgreSQL, SQLite) get one kind of event per call in soft mode
            done(live[0], bulk.unknown_written)
        result.skipped_stale += unknown - bulk.unknown_written
        if self._types is not None and self._types.assumed:
            self._check_assumed_types(cursor, live, layouts, bulk)
        # delete-mode=soft keeps no tombstones: a REMOVE is in the row itself, and the guard alone decides.
        if not self.dialect.transactions and written and not self.soft:
            superseded = self._recheck(cursor, written, letters)
            result.upserted -= superseded
            result.skipped_stale += superseded

    def _bulk_upsert(self, cursor: Any, rows: list[tuple[Any, ...]], alone: list[bool]) -> BulkResult:
        """The rows marked `alone` one statement each, first; then the others in bulk. Results in row order."""
        if not any(alone):
            return self._bulk(cursor, self._sql["upsert"], rows)
        singles = [index for index, flag in enumerate(alone) if flag]
        rest = [index for index, flag in enumerate(alone) if not flag]
        merged = BulkResult(counts=[None] * len(rows))
        try:
            parts = [([index], self.executor.bulk(cursor, self._sql["upsert"], [rows[index]], 1)) for index in singles]
        except Exception as exc:
            if self._types is None or not self.dialect.is_column_type_race(exc):
                raise
            # Another writer created one of our new sub-columns with another type first: learn the real types and
            # apply the batch again (every statement is guarded), so the attribute goes to aux instead.
            self._types.loaded = False
            raise TransientError(f"a concurrent writer typed a new column differently: {describe_error(exc)}") from exc
        parts.append((rest, self.executor.bulk(cursor, self._sql["upsert"], [rows[i] for i in rest], self.chunk_size)))
        for indexes, part in parts:
            merged.unknown_written += part.unknown_written
            for offset, index in enumerate(indexes):
                merged.counts[index] = part.counts[offset]
                if offset in part.rejected:
                    merged.rejected[index] = part.rejected[offset]
        return merged

    def _learn_types(self, cursor: Any) -> DataTypes:
        assert self._types is not None
        sql = self.dialect.column_types_sql()
        assert sql is not None
        self._types.learn(self.executor.fetch(cursor, sql))
        return self._types

    def _check_assumed_types(
        self, cursor: Any, events: list[ChangeEvent], layouts: list[Row], bulk: BulkResult
    ) -> None:
        """The batch created sub-columns with the types this writer assumed; another writer may have created some
        of them first, with other types, and our values were cast. Read the real types and rewrite the rows whose
        attributes do not fit them, with those attributes in aux (the guard lets the same version through)."""
        self._learn_types(cursor)
        rewrites = []
        for index, (event, layout) in enumerate(zip(events, layouts, strict=True)):
            if index in bulk.rejected:
                continue
            fitted, _ = self._fit(layout)
            if fitted is not layout:
                rewrites.append(self._params(event, fitted))
        if rewrites:
            log.warning("%d row(s) rewritten: a concurrent writer gave their attributes other types", len(rewrites))
            self._bulk_upsert(cursor, rewrites, [True] * len(rewrites))

    def _store_in_aux(self, cursor: Any, event: ChangeEvent, layout: Row, reason: str) -> bool:
        """The dialect's other way to store a row it rejected (CrateDB: every attribute in aux); False if none."""
        fallback = self.dialect.fallback_upsert_params(event, layout)
        if fallback is not None and self.mapping is not None:  # every non-key attribute in aux, no column set
            assert event.image is not None
            from kcl_relay.mapping.shape import keep

            kept = keep(self.mapping, event.key, event.image)
            rest = {name: value for name, value in kept.items() if name not in event.key}
            fallback = self._params(event, Row(pk=layout.pk, data={}, aux=rest, columns={}))
        if fallback is None or self.executor.run_alone(cursor, self._sql["upsert"], fallback) is not None:
            return False
        log.warning("%s: %s; stored with its attributes in aux", event.key_id, reason)
        return True

    # ---- mapped columns (kcl_relay/mapping) ----
    def _partition(self) -> str | None:
        partition = self.mapping.partition if self.mapping is not None else None
        return partition.name if partition is not None else None

    def _mapped_columns(self) -> list[tuple[str, str]]:
        """(quoted name, placeholder) of the mapped columns, after the row's own columns in every upsert."""
        from kcl_relay.mapping.sql import placeholder

        columns = self.mapping.columns if self.mapping is not None else ()
        return [(f'"{column.name}"', placeholder(self.dialect.name, column)) for column in columns]

    def _fit(self, layout: Row) -> tuple[Row, bool]:
        assert self._types is not None
        fitted, grows = self._types.fit(layout)
        if fitted is not layout and layout.columns:  # fit() rebuilds data and aux; the columns stay
            fitted = Row(fitted.pk, fitted.data, fitted.aux, layout.columns, layout.misfits)
        return fitted, grows

    def _params(self, event: ChangeEvent, layout: Row) -> tuple[Any, ...]:
        """The dialect's row parameters, then the mapped columns' (NULL where the row has no value)."""
        params = self.dialect.upsert_params(event, layout)
        if self.mapping is None:
            return params
        from kcl_relay.mapping.sql import param

        values = layout.columns or {}
        name, stored = self.dialect.name, self.dialect.stored_json
        return (*params, *(param(name, column, values.get(column.name), stored) for column in self.mapping.columns))

    def _recheck(self, cursor: Any, written: list[ChangeEvent], letters: list[DeadLetter]) -> int:
        """Without transactions, a REMOVE applied by another worker between our tombstone read and our upsert
        could be undone by it. Reading the tombstones again after the upsert closes that window (see the module
        doc): either we see the other worker's tombstone now (and delete what we wrote), or its state read comes
        after our upsert (and it deletes the row itself)."""
        tombstones = self._tombstones(cursor, written)
        targets = []
        for event in written:
            removed = tombstones.get(event.key_id)
            if removed is not None and removed > event.order:
                targets.append((event, removed))
        if not targets:
            return 0
        deleted, _ = self._delete_older(cursor, targets, letters)
        log.info("%d row(s) removed again after a concurrent REMOVE", deleted)
        return deleted

    def _accepted(self, events: list[ChangeEvent], bulk: BulkResult, letters: list[DeadLetter]) -> list[ChangeEvent]:
        for index, reason in bulk.rejected.items():
            letters.append(self._letter(events[index], reason))
        return [event for index, event in enumerate(events) if index not in bulk.rejected]

    def _state_read(self, events: list[ChangeEvent]) -> Read:
        assert self._key_names is not None
        names = self._key_names
        keys = [self.dialect.key_params(event) for event in events]
        return Read(keys, lambda n: self.dialect.state_sql(names, n), self.dialect.keys_per_read(names))

    def _tombstone_read(self, events: list[ChangeEvent]) -> Read:
        keys = [(event.key_id,) for event in events]
        return Read(keys, self.dialect.tombstone_select_sql, self.dialect.keys_per_read(("key_id",)))

    def _by_state_key(self, records: list[Sequence[Any]]) -> dict[Any, Any]:
        states = (self.dialect.read_state(record) for record in records)
        return {state.key: state for state in states}

    @staticmethod
    def _by_key_id(records: list[Sequence[Any]]) -> dict[str, tuple[int, str]]:
        return {str(key_id): (int(version), str(order)) for key_id, version, order in records}

    def _states(self, cursor: Any, events: list[ChangeEvent]) -> dict[Any, Any]:
        return self._by_state_key(self.executor.read_all(cursor, [self._state_read(events)])[0])

    def _tombstones(self, cursor: Any, events: list[ChangeEvent]) -> dict[str, tuple[int, str]]:
        return self._by_key_id(self.executor.read_all(cursor, [self._tombstone_read(events)])[0])

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
