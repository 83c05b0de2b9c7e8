"""Re-drive dead letters: once the cause is fixed, replay `<table>__deadletters` through the same pipeline.

Each dead letter is decoded and applied again as the record it was, at its own stream position, so the version
guards hold as for a late redelivery (an old record never overwrites a newer row). A batch is read, applied, and
then its dead-letter rows are deleted: the records that applied are gone, and those that fail again have been
dead-lettered anew (a fresh row with today's reason) by the pipeline itself. Interrupted, it loses nothing: at
worst a record stays twice in the dead letters, and applying it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.pipeline import FlushStats, Pipeline, PipelineOptions
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX
from kcl_relay.sink.options import sink_options
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import dialect_for, open_sink

__all__ = ["RedriveReport", "redrive"]

NO_POSITION = ("redrive", "0")  # a dead letter that never had one (never the case for stream records)


@dataclass
class RedriveReport:
    letters: int = 0  # dead letters read
    applied: int = 0  # of them, now applied (or superseded by newer rows: nothing left to do)
    failed_again: int = 0  # dead-lettered anew, with today's reason


@dataclass(frozen=True)
class _Settings:
    tombstone_retention: float = 86400.0
    retry_timeout: float = 300.0


def _row_identity(spec: TargetSpec) -> str:
    """A column naming each row of a table without a primary key, good for a DELETE right after the read."""
    return {"cratedb": "_id", "postgresql": "ctid", "sqlite": "rowid"}[spec.dialect]


def read_letters(spec: TargetSpec, limit: int | None = None) -> list[tuple[Any, RawRecord]]:
    """(row identity, record) of the dead letters, oldest first."""
    relation = dialect_for(spec).relation(DEADLETTERS_SUFFIX)
    identity = _row_identity(spec)
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")  # a tool reading a whole table, not the relay's write path
    selected = f"{identity}::text" if spec.dialect == "postgresql" else identity
    sql = f"SELECT {selected}, raw, shard_id, sequence_number FROM {relation} ORDER BY failed_at"
    rows = run_sql(spec, sql + (f" LIMIT {int(limit)}" if limit else ""))[1]
    letters = []
    for row_id, raw, shard_id, sequence_number in rows:
        number = str(sequence_number) if str(sequence_number or "").isdigit() else NO_POSITION[1]
        position = Position(str(shard_id) if shard_id else NO_POSITION[0], number)
        letters.append((row_id, RawRecord(data=str(raw).encode("utf-8"), position=position)))
    return letters


def _delete(spec: TargetSpec, row_ids: list[Any]) -> None:
    relation = dialect_for(spec).relation(DEADLETTERS_SUFFIX)
    placeholder = "%s::tid" if spec.dialect == "postgresql" else "?"  # CrateDB: a real-time delete by _id
    sql = f"DELETE FROM {relation} WHERE {_row_identity(spec)} = {placeholder}"
    engine = spec.create_engine()
    try:
        with engine.begin() as connection:
            connection.connection.cursor().executemany(sql, [(row_id,) for row_id in row_ids])
    finally:
        engine.dispose()


def redrive(
    spec: TargetSpec,
    batch_size: int = 1000,
    limit: int | None = None,
    settings: Any = None,
    progress: Callable[[RedriveReport], None] | None = None,
) -> RedriveReport:
    """Apply the dead letters of the target table again; delete those that applied. Raises if the target fails."""
    letters = read_letters(spec, limit)
    options = sink_options(settings or _Settings())
    pipeline = Pipeline(lambda _route: open_sink(spec, **options), PipelineOptions(batch_size=batch_size))
    report = RedriveReport()
    try:
        for start in range(0, len(letters), batch_size):
            batch = letters[start : start + batch_size]
            pipeline.add(record for _, record in batch)
            stats: FlushStats = pipeline.flush()  # applied, or dead-lettered anew, when it returns
            _delete(spec, [row_id for row_id, _ in batch])
            report.letters += len(batch)
            report.failed_again += stats.dead_letters
            report.applied += len(batch) - stats.dead_letters
            if progress:
                progress(report)
    finally:
        pipeline.close()
    return report
