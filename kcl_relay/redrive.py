"""Re-drive dead letters: once the cause is fixed, replay `<table>__deadletters` through the same pipeline.

Each dead letter is decoded and applied again as the record it was, at its own stream position, so the version
guards hold as for a late redelivery (an old record never overwrites a newer row). A batch is read, applied, and
then its dead-letter rows are deleted: the records that applied are gone, and those that fail again have been
dead-lettered anew (a fresh row with today's reason) by the pipeline itself. Interrupted, it loses nothing: at
worst a record stays twice in the dead letters, and applying it again changes nothing.

Memory holds one batch: the table is drained a page at a time, oldest first. The letters there at the start are
bounded by the newest `failed_at` then and by their count, so the fresh rows of letters that fail again (stamped
later) are not read again in the same run. Each page is the first of what is left; on CrateDB a REFRESH TABLE
before each page makes the deletes of the page before visible to that query (a keyset on `_id` is no option:
CrateDB does not compare `_id` by range).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.pool import NullPool

from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.options import default
from kcl_relay.pipeline import FlushStats, Pipeline, PipelineOptions
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX
from kcl_relay.sink.options import sink_options
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import dialect_for, open_sink

__all__ = ["DeadLetterTable", "RedriveReport", "redrive"]

NO_POSITION = ("redrive", "0")  # a dead letter that never had one (never the case for stream records)


@dataclass
class RedriveReport:
    letters: int = 0  # dead letters read
    applied: int = 0  # of them, now applied (or superseded by newer rows: nothing left to do)
    failed_again: int = 0  # dead-lettered anew, with today's reason


@dataclass(frozen=True)
class _Settings:
    tombstone_retention: float = default("tombstone-retention")
    retry_timeout: float = default("retry-timeout")


class DeadLetterTable:
    """The target's dead-letter table, read a page at a time (a tool's reads, not the relay's write path)."""

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec
        dialect = dialect_for(spec)
        self.relation = dialect.relation(DEADLETTERS_SUFFIX)
        self.identity = dialect.row_identity  # a column naming each row: the dead letters have no primary key
        self._refresh_sql = dialect.refresh_sql(self.relation)
        self._engine = spec.create_engine(poolclass=NullPool)
        self._param = dialect.param

    def close(self) -> None:
        self._engine.dispose()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._engine.connect() as connection:
            result = connection.exec_driver_sql(sql, tuple(params)) if params else connection.exec_driver_sql(sql)
            rows = [tuple(row) for row in result] if result.returns_rows else []
            connection.commit()
            return rows

    def _refresh(self) -> None:
        if self._refresh_sql is not None:
            self._query(self._refresh_sql)

    def bound(self) -> tuple[int, Any]:
        """(how many letters there are, the newest failed_at among them): what this run re-drives."""
        self._refresh()
        count, newest = self._query(f"SELECT count(*), max(failed_at) FROM {self.relation}")[0]
        return int(count), newest

    def page(self, newest: Any, size: int) -> list[tuple[Any, RawRecord]]:
        """(row identity, record) of the oldest `size` letters left that failed at `newest` or before."""
        self._refresh()
        selected = self.identity.selected
        where, params = "failed_at IS NULL", []  # NULL: never written by the relay, but re-driven as before
        if newest is not None:
            where, params = f"failed_at <= {self._param} OR {where}", [newest]
        sql = f"SELECT {selected}, raw, shard_id, sequence_number FROM {self.relation} WHERE {where} "
        sql += f"ORDER BY failed_at LIMIT {int(size)}"
        letters = []
        for row_id, raw, shard_id, sequence_number in self._query(sql, params):
            number = str(sequence_number) if str(sequence_number or "").isdigit() else NO_POSITION[1]
            position = Position(str(shard_id) if shard_id else NO_POSITION[0], number)
            letters.append((row_id, RawRecord(data=str(raw).encode("utf-8"), position=position)))
        return letters

    def delete(self, row_ids: Sequence[Any]) -> None:
        sql = f"DELETE FROM {self.relation} WHERE {self.identity.column} = {self.identity.param}"
        with self._engine.begin() as connection:
            connection.connection.cursor().executemany(sql, [(row_id,) for row_id in row_ids])


def redrive(
    spec: TargetSpec,
    batch_size: int = 1000,
    limit: int | None = None,
    settings: Any = None,
    progress: Callable[[RedriveReport], None] | None = None,
) -> RedriveReport:
    """Apply the dead letters of the target table again; delete those that applied. Raises if the target fails."""
    table = DeadLetterTable(spec)
    options = sink_options(settings or _Settings())
    pipeline = Pipeline(lambda _route: open_sink(spec, **options), PipelineOptions(batch_size=batch_size))
    report = RedriveReport()
    try:
        count, newest = table.bound()
        left = min(count, limit) if limit else count  # also stops a clock that stamps fresh letters in the past
        while left > 0:
            batch = table.page(newest, min(batch_size, left))
            if not batch:
                break
            pipeline.add(record for _, record in batch)
            stats: FlushStats = pipeline.flush()  # applied, or dead-lettered anew, when it returns
            table.delete([row_id for row_id, _ in batch])
            left -= len(batch)
            report.letters += len(batch)
            report.failed_again += stats.dead_letters
            report.applied += len(batch) - stats.dead_letters
            if progress:
                progress(report)
    finally:
        pipeline.close()
        table.close()
    return report
