"""The pipeline every source feeds: stage raw records, then decode -> route -> coalesce -> apply in one flush.

When flush() returns, everything staged before it is durable in the database (applied or dead-lettered), so the
caller may checkpoint up to `FlushStats.last_position`. A failure that outlasts the sink's retries raises instead, and
so does a bug of ours (a decoder that raises anything but DecodeError): never a dead letter checkpointed past.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import ChangeEvent, DeadLetter, Position, RawRecord
from kcl_relay.options import default
from kcl_relay.sink.base import Sink
from kcl_relay.sink.target import TargetSpec

log = logging.getLogger(__name__)

SinkFactory = Callable[[str | None], Sink]  # DynamoDB table name (when routing) or None -> the sink to write to


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = default("batch-size")
    buffer_time: float = default("buffer-time")
    ttl: str = default("ttl")  # or "ignore": TTL expiries keep the row
    route_tables: bool = default("route-tables")
    source_table: str | None = default("source-table")

    @classmethod
    def of(cls, settings: object) -> PipelineOptions:
        """From anything carrying these fields by name: a SourceSpec, or a processor's config."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


@dataclass
class FlushStats:
    records: int = 0
    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    ttl_ignored: int = 0
    dead_letters: int = 0
    misfits: int = 0  # mapped attribute values stored in aux: they did not fit their column's type
    last_position: Position | None = None
    batch_seconds: list[float] = field(default_factory=list)  # wall time of each database batch (decode to commit)

    @property
    def applied(self) -> int:
        return self.upserted + self.deleted

    def add(self, other: FlushStats) -> None:
        for name in ("records", "upserted", "deleted", "stale", "ttl_ignored", "dead_letters", "misfits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.last_position = other.last_position or self.last_position
        self.batch_seconds.extend(other.batch_seconds)


_heap_settled = False


def settle_heap() -> None:
    """Hide what start-up allocated (modules, drivers: some 50,000 objects) from the cyclic garbage collector, once
    per process. Decoding a batch allocates enough to trigger full collections, and each would walk all of them
    again: measured 36-86 ms per 10,000 replayed events before, 1-2 ms after. Objects are still freed by reference
    counting; only cycles among start-up objects are never collected."""
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.collect()
        gc.freeze()


def routed_table_name(dynamodb_table: str) -> str:
    """A DynamoDB table name as a target table name every dialect accepts (CrateDB refuses dots, for one)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", dynamodb_table)
    return f"t{name}" if name.startswith("_") or not name else name


def target_for(target: TargetSpec, dynamodb_table: str | None) -> TargetSpec:
    """route-tables=true: the target table named after the record's DynamoDB table, in the target's schema."""
    if dynamodb_table is None:
        return target
    return dataclasses.replace(target, table=routed_table_name(dynamodb_table))


@dataclass
class Pipeline:
    open_sink: SinkFactory
    options: PipelineOptions = field(default_factory=PipelineOptions)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._staged: list[RawRecord] = []
        self._oldest: float | None = None
        self._sinks: dict[str | None, Sink] = {}
        self._ready: set[str | None] = set()  # sinks whose tables exist
        self._expected_table = self.options.source_table
        self._closed_retries = 0  # retries of sinks closed since

    @property
    def pending(self) -> int:
        return len(self._staged)

    @property
    def retries(self) -> int:
        """Database writes retried after transient failures, over this pipeline's life."""
        return self._closed_retries + sum(sink.retries for sink in self._sinks.values())

    def add(self, records: Iterable[RawRecord]) -> None:
        before = len(self._staged)
        self._staged.extend(records)
        if self._oldest is None and len(self._staged) > before:
            self._oldest = self.clock()

    def due(self, lookahead: float = 0.0) -> bool:
        """Full, or the oldest staged record has waited buffer-time, or will have by the next chance to flush.

        `lookahead`: seconds until that next chance (a source that delivers at a known pace says so), so that a
        record never waits a whole extra delivery past buffer-time.
        """
        if not self._staged:
            return False
        waited = 0.0 if self._oldest is None else self.clock() - self._oldest
        return len(self._staged) >= self.options.batch_size or waited + lookahead >= self.options.buffer_time

    def flush(self) -> FlushStats:
        """Write everything staged; on failure it stays staged (a retry by the caller loses nothing)."""
        stats = FlushStats()
        size = self.options.batch_size
        for start in range(0, len(self._staged), size):  # one database batch holds at most batch-size records
            started = time.perf_counter()
            batch = self._write(self._staged[start : start + size])
            batch.batch_seconds.append(time.perf_counter() - started)
            stats.add(batch)
        self._staged, self._oldest = [], None
        return stats

    def _write(self, staged: list[RawRecord]) -> FlushStats:
        stats = FlushStats(records=len(staged))
        letters: list[DeadLetter] = []
        by_sink: dict[str | None, list[ChangeEvent]] = {}
        for record in staged:
            try:
                event = decode(record)
            except DecodeError as error:  # only a bad record; anything else is a bug of ours: it raises from flush
                letters.append(DeadLetter.of(record, f"undecodable: {error}"))
                continue
            if event.is_ttl_expiry and self.options.ttl == "ignore":
                stats.ttl_ignored += 1
                continue
            route = self._route(event)
            if isinstance(route, DeadLetter):
                letters.append(route)
                continue
            by_sink.setdefault(route, []).append(event)

        for route, events in by_sink.items():
            sink = self._sink(route, events[0])
            result = sink.apply(coalesce(events))
            stats.upserted += result.upserted
            stats.deleted += result.deleted
            stats.stale += result.skipped_stale
            stats.misfits += result.misfits
            stats.dead_letters += len(result.dead_letters)
        if letters:
            self._sink(None, None).dead_letter(letters)
            stats.dead_letters += len(letters)
            for letter in letters[:5]:
                log.warning("dead letter at %s/%s: %s", letter.shard_id, letter.sequence_number, letter.reason)
        stats.last_position = staged[-1].position
        return stats

    def _route(self, event: ChangeEvent) -> str | DeadLetter | None:
        if self.options.route_tables:
            return event.table_name or None
        if self._expected_table is None and event.table_name:
            # Recorded in the target, so every shard's processor and every worker agrees on the first one seen.
            self._expected_table = self._sink(None, None).claim_source_table(event.table_name)
            log.info("source table: %s (records of other tables are dead-lettered)", self._expected_table)
        if event.table_name and event.table_name != self._expected_table:
            reason = (
                f"record of DynamoDB table {event.table_name!r}, but this relay carries {self._expected_table!r}:"
                " use route-tables=true to write each table into its own target table"
            )
            assert event.raw is not None
            return DeadLetter.of(event.raw, reason)
        return None

    def _sink(self, route: str | None, sample: ChangeEvent | None) -> Sink:
        sink = self._sinks.get(route)
        if sink is None:
            sink = self._sinks[route] = self.open_sink(route)
        if sample is not None and route not in self._ready:
            sink.ensure_table(sample.key_types)
            self._ready.add(route)
        return sink

    def close(self) -> None:
        self._closed_retries = self.retries
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
        self._ready.clear()
