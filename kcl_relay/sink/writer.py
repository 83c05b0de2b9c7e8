"""The apply algorithm, the same for every database; dialect.py renders what differs.

For a batch coalesced to one event per key, apply() runs in one transaction (CrateDB: statement by statement):

1. REMOVE: write tombstones (guarded upsert), read the rows' current state by primary key, delete those not newer
   than the REMOVE with a guarded delete; rows that changed in between are looked at again.
2. INSERT/MODIFY: read the tombstones of the batch's keys, drop events not newer than their tombstone (a late
   older write must not bring back a removed row), then one guarded bulk upsert installs the full images.
   Without transactions (CrateDB) the tombstones are read once more afterwards, see _recheck.
3. Rows the database rejects become dead letters (with its reason); the rest of the batch is applied.
4. Commit. Transient failures retry the whole batch (every statement is guarded, hence idempotent); others raise.

Each step is one statement per chunk of rows (bulk writes, IN-list reads), whatever the batch size: never one
statement per event. Rows are handled in key order, so concurrent workers lock them in the same order.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType
from kcl_relay.cdc.jsonenc import dumps
from kcl_relay.cdc.layout import Row, split
from kcl_relay.sink.base import ApplyResult, Sink
from kcl_relay.sink.dialect import Dialect
from kcl_relay.sink.retry import RetryPolicy, TransientError, call_with_retry, describe_error, is_transient
from kcl_relay.sink.target import TargetSpec

__all__ = ["TableWriter", "dialect_for", "open_sink"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TOMBSTONE_RETENTION = timedelta(hours=24)
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


@dataclass
class _Bulk:
    """Outcome of one bulk statement over rows 0..n-1."""

    counts: list[int | None] = field(default_factory=list)  # rows written per row; None: only a total is known
    unknown_written: int = 0  # the total for the rows whose count is None
    rejected: dict[int, str] = field(default_factory=dict)  # row -> the database's reason


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
    ) -> None:
        self.spec = spec
        self.dialect = dialect or dialect_for(spec)
        self.retry = retry or RetryPolicy()
        self.tombstone_retention = tombstone_retention
        self.purge_interval = purge_interval
        self.chunk_size = chunk_size
        self.clock = clock
        self.statements = 0  # database calls made: for tests and metrics
        self._engine = engine or spec.create_engine(poolclass=NullPool)
        self._conn: Any = None
        self._key_names: tuple[str, ...] | None = None
        self._dead_letter_table = False
        self._sql: dict[str, str] = {}
        self._last_purge: float | None = None

    # ---- Sink ----
    def ensure_table(self, key_types: Mapping[str, KeyType]) -> None:
        self.dialect.check_key(key_types)
        statements = [*self.dialect.create_tables(key_types), self.dialect.create_dead_letter_table()]
        self._transaction(lambda cursor: self._run_all(cursor, statements), ddl=True)
        self._dead_letter_table = True
        names = tuple(sorted(key_types))
        self._key_names = names
        self._sql = {
            "upsert": self.dialect.upsert_sql(names),
            "delete": self.dialect.delete_sql(names),
            "tombstone": self.dialect.tombstone_upsert_sql(),
        }

    def apply(self, events: Sequence[ChangeEvent]) -> ApplyResult:
        if not events:
            return ApplyResult()
        if self._key_names is None:
            self.ensure_table(events[0].key_types)
        result = self._transaction(lambda cursor: self._apply(cursor, events))
        if result.dead_letters:
            log.warning("%d record(s) dead-lettered in %s", len(result.dead_letters), self.spec.qualified_table)
        self._maybe_purge()
        return result

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if not self._dead_letter_table:
            statement = self.dialect.create_dead_letter_table()
            self._transaction(lambda cursor: self._run_all(cursor, [statement]), ddl=True)
            self._dead_letter_table = True
        self._transaction(lambda cursor: self._store_letters(cursor, letters))

    def claim_source_table(self, dynamodb_table: str) -> str:
        create = self.dialect.create_settings_table()
        self._transaction(lambda cursor: self._run_all(cursor, [create]), ddl=True)

        def claim(cursor: Any) -> str:
            self._call(cursor.execute, self.dialect.claim_setting_sql(), ("source_table", dynamodb_table))
            rows = self.dialect.fetch(cursor, self.dialect.setting_sql(), ("source_table",))
            return str(rows[0][0])

        return self._transaction(claim)

    def purge_tombstones(self) -> int:
        """Delete tombstones older than the retention; returns how many (when the database says)."""
        if self._key_names is None:
            return 0
        cutoff = self.dialect.timestamp(self.clock() - self.tombstone_retention)
        sql = self.dialect.tombstone_purge_sql()

        def work(cursor: Any) -> int:
            self._call(cursor.execute, sql, (cutoff,))
            return max(int(cursor.rowcount), 0)

        purged = self._transaction(work)
        self._last_purge = time.monotonic()
        return purged

    def close(self) -> None:
        self._drop_connection()
        self._engine.dispose()

    # ---- transactions and connections ----
    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._engine.raw_connection()
            self.dialect.prepare(conn)
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
            except Exception as exc:  # already broken: nothing left to release
                log.debug("closing a broken connection failed: %s", describe_error(exc))

    def _transaction(self, work: Callable[[Any], T], ddl: bool = False) -> T:
        """Run work(cursor) and commit before returning; retried as a whole on transient failures.

        For DDL also on errors a concurrent CREATE ... IF NOT EXISTS of another worker can cause (PostgreSQL: a
        unique violation in its catalog); the retry finds the table there."""

        def attempt() -> T:
            conn = self._connection()
            cursor = conn.cursor()
            try:
                self.dialect.begin(cursor)
                value = work(cursor)
                self.dialect.commit(conn)
                return value
            except BaseException as exc:
                self._abort(conn, exc)
                raise
            finally:
                with contextlib.suppress(Exception):  # the connection may be gone already
                    cursor.close()

        if ddl:
            return call_with_retry(attempt, self.retry, transient=self._ddl_race_or_transient)
        return call_with_retry(attempt, self.retry)

    def _ddl_race_or_transient(self, exc: BaseException) -> bool:
        return is_transient(exc) or self.dialect.is_row_error(exc)

    def _abort(self, conn: Any, exc: BaseException) -> None:
        if isinstance(exc, Exception) and is_transient(exc):
            self._drop_connection()  # the next attempt starts on a fresh connection
            return
        try:
            self.dialect.rollback(conn)
        except Exception:
            self._drop_connection()

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        self.statements += 1
        return function(*args)

    def _run_all(self, cursor: Any, statements: Sequence[str]) -> None:
        for statement in statements:
            self._call(cursor.execute, statement)

    def _in_savepoint(self, cursor: Any, function: Callable[..., T], *args: Any) -> T:
        """Run one statement so that a row error leaves the transaction usable (PostgreSQL aborts it otherwise)."""
        if not self.dialect.savepoints:
            return self._call(function, *args)
        self._call(self.dialect.savepoint, cursor)
        try:
            value = self._call(function, *args)
        except Exception as exc:
            if self.dialect.is_row_error(exc) and not is_transient(exc):
                self._call(self.dialect.rollback_to, cursor)
            raise
        self._call(self.dialect.release, cursor)
        return value

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
        self._remove(cursor, removes, result, letters)
        self._upsert(cursor, upserts, result, letters)
        if letters:
            self._store_letters(cursor, letters)
        result.dead_letters = letters
        return result

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
            bulk = self._bulk(cursor, self._sql["delete"], params)
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
        tombstones = self._tombstones(cursor, upserts)
        live: list[ChangeEvent] = []
        rows: list[tuple[Any, ...]] = []
        layouts: list[Row] = []
        for event in upserts:
            removed = tombstones.get(event.key_id)
            if removed is not None and removed >= event.order:
                result.skipped_stale += 1
                continue
            assert event.image is not None  # checked by _problem
            layout = split(event.key, event.image)
            try:
                rows.append(self.dialect.upsert_params(event, layout))
            except (TypeError, ValueError) as exc:
                letters.append(self._letter(event, f"cannot store in {self.dialect.name}: {describe_error(exc)}"))
                continue
            live.append(event)
            layouts.append(layout)
        bulk = self._bulk(cursor, self._sql["upsert"], rows)
        unknown = 0
        written: list[ChangeEvent] = []
        for index, event in enumerate(live):
            count = bulk.counts[index]
            if index in bulk.rejected:
                fallback = self.dialect.fallback_upsert_params(event, layouts[index])
                if fallback is not None and self._run_fallback(cursor, fallback):
                    log.warning("%s: %s; stored with its attributes in aux", event.key_id, bulk.rejected[index])
                    written.append(event)
                    result.upserted += 1
                    continue
                letters.append(self._letter(event, bulk.rejected[index]))
                continue
            written.append(event)
            if count is None:
                unknown += 1
            elif count > 0:
                result.upserted += 1
            else:
                result.skipped_stale += 1  # the guard kept a newer row
        result.upserted += bulk.unknown_written
        result.skipped_stale += unknown - bulk.unknown_written
        if self.dialect.recheck_tombstones and written:
            superseded = self._recheck(cursor, written, letters)
            result.upserted -= superseded
            result.skipped_stale += superseded

    def _run_fallback(self, cursor: Any, params: tuple[Any, ...]) -> bool:
        try:
            self._in_savepoint(cursor, self.dialect.run_one, cursor, self._sql["upsert"], params)
        except Exception as exc:
            if is_transient(exc) or not self.dialect.is_row_error(exc):
                raise
            return False
        return True

    def _recheck(self, cursor: Any, written: list[ChangeEvent], letters: list[DeadLetter]) -> int:
        """Without transactions, a REMOVE applied by another worker between our tombstone read and our upsert
        could be undone by it. Reading the tombstones again after the upsert closes that window: either we see
        the other worker's tombstone now (and delete what we wrote), or its state read comes after our upsert
        (and it deletes the row itself)."""
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

    def _accepted(self, events: list[ChangeEvent], bulk: _Bulk, letters: list[DeadLetter]) -> list[ChangeEvent]:
        for index, reason in bulk.rejected.items():
            letters.append(self._letter(events[index], reason))
        return [event for index, event in enumerate(events) if index not in bulk.rejected]

    def _read(self, cursor: Any, events: list[ChangeEvent], sql: Callable[[int], str], keys: Callable) -> list:
        """SELECT by primary key in chunks: real-time lookups, one statement per chunk of keys."""
        records: list[Sequence[Any]] = []
        size = self.dialect.keys_per_select
        for start in range(0, len(events), size):
            chunk = events[start : start + size]
            params = [value for event in chunk for value in keys(event)]
            records.extend(self._call(self.dialect.fetch, cursor, sql(len(chunk)), params))
        return records

    def _states(self, cursor: Any, events: list[ChangeEvent]) -> dict[Any, Any]:
        assert self._key_names is not None
        names = self._key_names
        records = self._read(cursor, events, lambda n: self.dialect.state_sql(names, n), self.dialect.key_params)
        states = (self.dialect.read_state(record) for record in records)
        return {state.key: state for state in states}

    def _tombstones(self, cursor: Any, events: list[ChangeEvent]) -> dict[str, tuple[int, str]]:
        records = self._read(cursor, events, self.dialect.tombstone_select_sql, lambda event: (event.key_id,))
        return {str(key_id): (int(version), str(order)) for key_id, version, order in records}

    def _bulk(self, cursor: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> _Bulk:
        """One bulk call per chunk; rows it rejects (or all, if it failed as a whole) are re-run one by one to
        apply the good ones and learn each bad one's reason. Errors that are not about a row raise."""
        out = _Bulk()
        for start in range(0, len(rows), self.chunk_size):
            chunk = rows[start : start + self.chunk_size]
            counts: list[int | None]
            try:
                per_row = self._in_savepoint(cursor, self.dialect.run_many, cursor, sql, chunk)
            except Exception as exc:
                if is_transient(exc) or not self.dialect.is_row_error(exc):
                    raise
                counts, failed = [None] * len(chunk), list(range(len(chunk)))
            else:
                if isinstance(per_row, int):  # only a total is known
                    out.unknown_written += per_row
                    out.counts.extend([None] * len(chunk))
                    continue
                counts = list(per_row)
                failed = [index for index, count in enumerate(per_row) if count < 0]
            for index in failed:
                try:
                    counts[index] = self._in_savepoint(cursor, self.dialect.run_one, cursor, sql, chunk[index])
                except Exception as exc:
                    if is_transient(exc) or not self.dialect.is_row_error(exc):
                        raise
                    counts[index] = None
                    out.rejected[start + index] = f"rejected by {self.dialect.name}: {describe_error(exc)}"
            out.counts.extend(counts)
        return out

    def _store_letters(self, cursor: Any, letters: Sequence[DeadLetter]) -> None:
        rows = [self.dialect.dead_letter_params(letter) for letter in letters]
        for start in range(0, len(rows), self.chunk_size):
            chunk = rows[start : start + self.chunk_size]
            per_row = self._call(self.dialect.run_many, cursor, self.dialect.dead_letter_sql(), chunk)
            if isinstance(per_row, list) and any(count < 0 for count in per_row):
                raise RuntimeError(f"{self.dialect.name} refused to store dead letters")

    def _maybe_purge(self) -> None:
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
