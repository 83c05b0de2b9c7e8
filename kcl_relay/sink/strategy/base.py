"""What both apply strategies share: sorting a batch, REMOVEs as tombstones plus guarded deletes, the guarded bulk
upsert of the full images, and the reads by key they need (writer.py describes the algorithm step by step).

A strategy runs inside one attempt of the writer's transaction (executor.transaction): it holds no connection and
spells no SQL; the writer prepared the statements (TableWriter._sql) and the dialect renders the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kcl_relay.cdc.event import ChangeEvent, DeadLetter
from kcl_relay.cdc.layout import Row, split
from kcl_relay.sink.base import ApplyResult
from kcl_relay.sink.executor import BulkResult, Read
from kcl_relay.sink.retry import TransientError

if TYPE_CHECKING:
    from kcl_relay.sink.writer import TableWriter

__all__ = ["MAX_DELETE_ROUNDS", "ApplyStrategy"]

MAX_DELETE_ROUNDS = 5


def _key_id(event: ChangeEvent) -> str:
    return event.key_id


class ApplyStrategy:
    """The apply algorithm of one writer; subclasses say how it is guarded against concurrent writers."""

    name = "base"

    def __init__(self, writer: TableWriter) -> None:
        self.writer = writer
        self.dialect = writer.dialect
        self.executor = writer.executor

    # ---- hooks: the transactional strategy leaves them as they are ----
    def begin_attempt(self, first: bool) -> None:
        """Before each attempt of one apply (a retried attempt runs again from the start)."""

    def committed(self) -> None:
        """After the apply's transaction committed."""

    def soft_groups(self, removes: list[ChangeEvent], upserts: list[ChangeEvent]) -> list[list[ChangeEvent]]:
        """delete-mode=soft: the events one guarded bulk upsert each writes."""
        return [removes, upserts]

    def before_upsert(self, cursor: Any) -> None:
        """Before a batch's upserts read or write anything."""

    def fit(self, layout: Row) -> tuple[Row, bool]:
        """The row as it is sent, and whether it must go in a statement of its own."""
        return layout, False

    def bulk_upsert(self, cursor: Any, rows: list[tuple[Any, ...]], alone: list[bool]) -> BulkResult:
        return self.bulk(cursor, self.writer._sql["upsert"], rows)

    def store_in_aux(self, cursor: Any, event: ChangeEvent, layout: Row, reason: str) -> bool:
        """Another way to store a row the database rejected; False: it becomes a dead letter."""
        return False

    def after_upsert(
        self,
        cursor: Any,
        live: list[ChangeEvent],
        layouts: list[Row],
        bulk: BulkResult,
        written: list[ChangeEvent],
        letters: list[DeadLetter],
    ) -> int:
        """After the guarded upsert; returns how many written rows turned out superseded (and were undone)."""
        return 0

    # ---- the algorithm ----
    def apply(self, cursor: Any, events: Sequence[ChangeEvent]) -> ApplyResult:
        writer = self.writer
        result = ApplyResult()
        letters: list[DeadLetter] = []
        upserts: list[ChangeEvent] = []
        removes: list[ChangeEvent] = []
        for event in events:
            problem = writer._problem(event)
            if problem is not None:
                letters.append(writer._letter(event, problem))
            else:
                (removes if event.op == "REMOVE" else upserts).append(event)
        # One key order for every worker: concurrent transactions then lock rows in the same order (no deadlock).
        removes.sort(key=_key_id)
        upserts.sort(key=_key_id)
        if writer.soft:
            # delete-mode=soft: a REMOVE is an upsert of its row flagged removed, under the same guard, so the
            # newest event of a key wins in its row alone (atomic per row): no tombstone to read or write, no
            # re-check, no delete.
            for group in self.soft_groups(removes, upserts):
                self.upsert(cursor, sorted(group, key=_key_id), result, letters)
        else:
            # REMOVEs and upserts in turn. Running the REMOVEs on a second cursor beside the upserts (they are about
            # different keys) was measured slower on a CrateDB with busy cores: 360-1,051 against 419-1,341
            # events/s in three interleaved rounds (benchmarks/results/cratedb_strategies.md), so it is not done.
            self.remove(cursor, removes, result, letters)
            self.upsert(cursor, upserts, result, letters)
        if letters:
            writer._store_letters(cursor, letters)
        result.dead_letters = letters
        return result

    def bulk(self, cursor: Any, sql: str, rows: Sequence[tuple[Any, ...]], version_checked: bool = False) -> BulkResult:
        return self.executor.bulk(cursor, sql, rows, self.writer.chunk_size, version_checked)

    def remove(self, cursor: Any, removes: list[ChangeEvent], result: ApplyResult, letters: list[DeadLetter]) -> None:
        if not removes:
            return
        now = self.writer.clock()
        tombstones = [self.dialect.tombstone_params(event, now) for event in removes]
        pending = self.accepted(removes, self.bulk(cursor, self.writer._sql["tombstone"], tombstones), letters)
        deleted, stale = self.delete_older(cursor, [(event, event.order) for event in pending], letters)
        result.deleted += deleted
        result.skipped_stale += stale

    def delete_older(
        self, cursor: Any, targets: list[tuple[ChangeEvent, tuple[int, str]]], letters: list[DeadLetter]
    ) -> tuple[int, int]:
        """Delete each event's row unless it is newer than the order given with it; returns (deleted, stale).

        The row's state is read first (CrateDB: a real-time Get; a guarded DELETE by query would not see rows
        written since the last refresh), then deleted by key with a guard. A row that changed in between is not
        deleted, and is looked at again."""
        deleted = stale = 0
        pending = targets
        for _ in range(MAX_DELETE_ROUNDS):
            states = self.states(cursor, [event for event, _ in pending])
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
            bulk = self.bulk(cursor, self.writer._sql["delete"], params, version_checked=True)
            pending = []
            for index, (event, order) in enumerate(chosen):
                count = bulk.counts[index]
                if index in bulk.rejected:
                    letters.append(self.writer._letter(event, bulk.rejected[index]))
                elif count is None or count > 0:
                    deleted += 1  # a count-less bulk: the SQL guard decided, nothing to re-examine
                else:
                    pending.append((event, order))  # the row changed after it was read: look again
            if not pending:
                return deleted, stale
        raise TransientError(f"{len(pending)} row(s) kept changing while being deleted")

    def upsert(self, cursor: Any, upserts: list[ChangeEvent], result: ApplyResult, letters: list[DeadLetter]) -> None:
        if not upserts:
            return
        writer = self.writer
        self.before_upsert(cursor)
        # Only the tombstones are read first, not the rows: whether an image is newer than its row is the upsert's
        # own guard's decision (atomic per row, in any interleaving), and the upsert says which rows it kept as they
        # were (CrateDB fails them on purpose, cratedb.py). So a read of the rows first could only skip sending a
        # stale image, never change what a row ends as; on CrateDB it cost more than the upsert it guarded.
        # The tombstones are read first because a late older write must never bring a removed row back, not even
        # for a moment; the optimistic strategy's re-check is what makes that hold against a concurrent REMOVE.
        tombstones = {} if writer.soft else self.tombstones(cursor, upserts)
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
                layout = split(event.key, event.image, writer.mapping)
                result.misfits += layout.misfits
                layout, grows = self.fit(layout)
            # The layout decided what each database holds: a value the parameters cannot take is a bug of ours (a
            # crash, the batch redelivered), never a dead letter.
            rows.append(writer._params(event, layout))
            live.append(event)
            layouts.append(layout)
            alone.append(grows)
        bulk = self.bulk_upsert(cursor, rows, alone)
        written: list[ChangeEvent] = []
        unknown = 0

        def done(event: ChangeEvent, rows: int = 1) -> None:
            if event.op == "REMOVE":  # delete-mode=soft: the row is flagged removed
                result.deleted += rows
            else:
                result.upserted += rows

        for index, event in enumerate(live):
            if index in bulk.rejected:
                if self.store_in_aux(cursor, event, layouts[index], bulk.rejected[index]):
                    written.append(event)
                    done(event)
                else:
                    letters.append(writer._letter(event, bulk.rejected[index]))
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
        superseded = self.after_upsert(cursor, live, layouts, bulk, written, letters)
        result.upserted -= superseded
        result.skipped_stale += superseded

    def accepted(self, events: list[ChangeEvent], bulk: BulkResult, letters: list[DeadLetter]) -> list[ChangeEvent]:
        for index, reason in bulk.rejected.items():
            letters.append(self.writer._letter(events[index], reason))
        return [event for index, event in enumerate(events) if index not in bulk.rejected]

    # ---- reads by key ----
    def state_read(self, events: list[ChangeEvent]) -> Read:
        names = self.writer._key_names
        assert names is not None
        keys = [self.dialect.key_params(event) for event in events]
        return Read(keys, lambda n: self.dialect.state_sql(names, n), self.dialect.keys_per_read(names))

    def tombstone_read(self, events: list[ChangeEvent]) -> Read:
        keys = [(event.key_id,) for event in events]
        return Read(keys, self.dialect.tombstone_select_sql, self.dialect.keys_per_read(("key_id",)))

    def by_state_key(self, records: list[Sequence[Any]]) -> dict[Any, Any]:
        states = (self.dialect.read_state(record) for record in records)
        return {state.key: state for state in states}

    @staticmethod
    def by_key_id(records: list[Sequence[Any]]) -> dict[str, tuple[int, str]]:
        return {str(key_id): (int(version), str(order)) for key_id, version, order in records}

    def states(self, cursor: Any, events: list[ChangeEvent]) -> dict[Any, Any]:
        return self.by_state_key(self.executor.read_all(cursor, [self.state_read(events)])[0])

    def tombstones(self, cursor: Any, events: list[ChangeEvent]) -> dict[str, tuple[int, str]]:
        return self.by_key_id(self.executor.read_all(cursor, [self.tombstone_read(events)])[0])
