"""The optimistic strategy (CrateDB: no transactions; reads see the last refresh except primary-key Gets).

Every read is a real-time Get, deletes name the _seq_no/_primary_term they read, upserts are guarded per row and
say which rows were stale, the tombstones of written rows are read again afterwards (the re-check), data's
sub-column types are learned and checked (crate_types.py), and a row the database rejects is written again with
every attribute in aux.

Why concurrent writers converge without transactions
----------------------------------------------------
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
and SQLite (one writer at a time) get the same result from their transactions (transactional.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kcl_relay.cdc.event import ChangeEvent, DeadLetter
from kcl_relay.cdc.layout import Row
from kcl_relay.sink.crate_types import DataTypes
from kcl_relay.sink.executor import BulkResult
from kcl_relay.sink.retry import TransientError, describe_error
from kcl_relay.sink.strategy.base import ApplyStrategy

if TYPE_CHECKING:
    from kcl_relay.sink.writer import TableWriter

__all__ = ["OptimisticStrategy"]

log = logging.getLogger(__name__)


class OptimisticStrategy(ApplyStrategy):
    name = "optimistic"

    def __init__(self, writer: TableWriter) -> None:
        super().__init__(writer)
        # data's sub-column types, where the database types them on the fly and casts later values silently
        self.types = DataTypes() if self.dialect.column_types_sql() else None

    def begin_attempt(self, first: bool) -> None:
        if self.types is not None:
            if not first:  # the table may have changed under the failed attempt (dropped, recreated)
                self.types.loaded = False
            self.types.begin()

    def committed(self) -> None:
        if self.types is not None:
            self.types.commit()  # only now: a failed attempt's assumptions must not outlive it

    def soft_groups(self, removes: list[ChangeEvent], upserts: list[ChangeEvent]) -> list[list[ChangeEvent]]:
        return [removes + upserts]  # the bulk answer counts per row: one statement for all of them

    def before_upsert(self, cursor: Any) -> None:
        if self.types is not None and not self.types.loaded:
            self.learn_types(cursor)

    def fit(self, layout: Row) -> tuple[Row, bool]:
        if self.types is None:
            return layout, False
        fitted, grows = self.types.fit(layout)
        if fitted is not layout and layout.columns:  # fit() rebuilds data and aux; the columns stay
            fitted = Row(fitted.pk, fitted.data, fitted.aux, layout.columns, layout.misfits)
        return fitted, grows

    def after_upsert(
        self,
        cursor: Any,
        live: list[ChangeEvent],
        layouts: list[Row],
        bulk: BulkResult,
        written: list[ChangeEvent],
        letters: list[DeadLetter],
    ) -> int:
        if self.types is not None and self.types.assumed:
            self.check_assumed_types(cursor, live, layouts, bulk)
        # delete-mode=soft keeps no tombstones: a REMOVE is in the row itself, and the guard alone decides.
        if written and not self.writer.soft:
            return self.recheck(cursor, written, letters)
        return 0

    def bulk_upsert(self, cursor: Any, rows: list[tuple[Any, ...]], alone: list[bool]) -> BulkResult:
        """The rows marked `alone` one statement each, first; then the others in bulk. Results in row order."""
        upsert = self.writer._sql["upsert"]
        if not any(alone):
            return self.bulk(cursor, upsert, rows)
        singles = [index for index, flag in enumerate(alone) if flag]
        rest = [index for index, flag in enumerate(alone) if not flag]
        merged = BulkResult(counts=[None] * len(rows))
        try:
            parts = [([index], self.executor.bulk(cursor, upsert, [rows[index]], 1)) for index in singles]
        except Exception as exc:
            if self.types is None or not self.dialect.is_column_type_race(exc):
                raise
            # Another writer created one of our new sub-columns with another type first: learn the real types and
            # apply the batch again (every statement is guarded), so the attribute goes to aux instead.
            self.types.loaded = False
            raise TransientError(f"a concurrent writer typed a new column differently: {describe_error(exc)}") from exc
        parts.append((rest, self.executor.bulk(cursor, upsert, [rows[i] for i in rest], self.writer.chunk_size)))
        for indexes, part in parts:
            merged.unknown_written += part.unknown_written
            for offset, index in enumerate(indexes):
                merged.counts[index] = part.counts[offset]
                if offset in part.rejected:
                    merged.rejected[index] = part.rejected[offset]
        return merged

    def learn_types(self, cursor: Any) -> DataTypes:
        assert self.types is not None
        sql = self.dialect.column_types_sql()
        assert sql is not None
        self.types.learn(self.executor.fetch(cursor, sql))
        return self.types

    def check_assumed_types(self, cursor: Any, events: list[ChangeEvent], layouts: list[Row], bulk: BulkResult) -> None:
        """The batch created sub-columns with the types this writer assumed; another writer may have created some
        of them first, with other types, and our values were cast. Read the real types and rewrite the rows whose
        attributes do not fit them, with those attributes in aux (the guard lets the same version through)."""
        self.learn_types(cursor)
        rewrites = []
        for index, (event, layout) in enumerate(zip(events, layouts, strict=True)):
            if index in bulk.rejected:
                continue
            fitted, _ = self.fit(layout)
            if fitted is not layout:
                rewrites.append(self.writer._params(event, fitted))
        if rewrites:
            log.warning("%d row(s) rewritten: a concurrent writer gave their attributes other types", len(rewrites))
            self.bulk_upsert(cursor, rewrites, [True] * len(rewrites))

    def store_in_aux(self, cursor: Any, event: ChangeEvent, layout: Row, reason: str) -> bool:
        """A row whose `data` clashes with the types CrateDB fixed for data's sub-columns on earlier rows (an
        attribute that was a number is now text, say), or that it cannot hold as dynamic columns: written again with
        every non-key attribute in aux, intact. False when `data` held nothing to move (then it is a dead letter)."""
        writer = self.writer
        if not layout.data:
            return False
        if writer.mapping is not None:  # every non-key attribute in aux, no column set
            assert event.image is not None
            from kcl_relay.mapping.shape import keep

            kept = keep(writer.mapping, event.key, event.image)
            rest = {name: value for name, value in kept.items() if name not in event.key}
            fallback = writer._params(event, Row(pk=layout.pk, data={}, aux=rest, columns={}))
        else:
            fallback = self.dialect.upsert_params(event, Row(pk=layout.pk, data={}, aux={**layout.data, **layout.aux}))
        if self.executor.run_alone(cursor, writer._sql["upsert"], fallback) is not None:
            return False
        log.warning("%s: %s; stored with its attributes in aux", event.key_id, reason)
        return True

    def recheck(self, cursor: Any, written: list[ChangeEvent], letters: list[DeadLetter]) -> int:
        """Without transactions, a REMOVE applied by another worker between our tombstone read and our upsert
        could be undone by it. Reading the tombstones again after the upsert closes that window (see the module
        doc): either we see the other worker's tombstone now (and delete what we wrote), or its state read comes
        after our upsert (and it deletes the row itself)."""
        tombstones = self.tombstones(cursor, written)
        targets = []
        for event in written:
            removed = tombstones.get(event.key_id)
            if removed is not None and removed > event.order:
                targets.append((event, removed))
        if not targets:
            return 0
        deleted, _ = self.delete_older(cursor, targets, letters)
        log.info("%d row(s) removed again after a concurrent REMOVE", deleted)
        return deleted
