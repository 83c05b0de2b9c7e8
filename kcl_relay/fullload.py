"""The full load: copy a DynamoDB table into the target with parallel Scan segments; with `stream=`, follow the
table's Kinesis stream from a point before the scan began, so that nothing between the two is lost (with
`stream=:dynamodb`, the table's own DynamoDB stream from its trim horizon, earlier still).

Why the two together converge on the DynamoDB table, even while writers change it during the scan:

* Every scanned item is an INSERT whose version is AWS's time before its page was read, minus a margin
  (source/dynamodb.py): the item contains every change stamped up to its version. On an equal version the
  snapshot item wins (its position ranks above every shard); a newer stream event wins; an older one is stale.
* The stream starts at a time before the first page's version (STREAM_LEAD earlier still), so every change
  newer than a snapshot item is delivered, and the guards in the sink keep, per key, the newest of all of them.
* Rows the scan did not find and no change since wrote (cdc_version below the first page's version) are left
  over from before: the prune removes them with tombstones at that version, so a target that held an older copy
  ends up equal too.

Once the scan is done, the stream side has converged when every shard has been read to its tip after that
(`once=true` then stops; otherwise the relay keeps following the stream like `kinesis+dynamodb+cdc://`).
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.event import SNAPSHOT_SHARD, ChangeEvent, DeadLetter, Position
from kcl_relay.kcl.supervisor import PROGRESS_INTERVAL, say
from kcl_relay.rates import rate
from kcl_relay.sink.admin import check_reachable
from kcl_relay.sink.base import Sink
from kcl_relay.sink.reader import TargetReader
from kcl_relay.sink.target import TargetError, TargetSpec
from kcl_relay.sink.writer import dialect_for, open_sink
from kcl_relay.source import dynamodb
from kcl_relay.source.dynamodb import AwsClock, TableInfo
from kcl_relay.source.table_url import TableSpec
from kcl_relay.stopflag import StopFlag, Stoppable

__all__ = ["STREAM_LEAD", "Snapshot", "SnapshotCompanion", "load_table", "prepare_target"]

# The stream starts this much before the first snapshot version: Kinesis stamps a record's arrival after DynamoDB
# stamped the change, so any earlier start replays only changes the guards already order; a minute also absorbs
# any difference between the two services' clocks. Whole seconds: the KCL takes AT_TIMESTAMP in epoch seconds.
STREAM_LEAD = 60.0
PRUNE_POSITION = Position(SNAPSHOT_SHARD, "0")  # below every scanned item's position: an item wins a tie with it
INTERRUPTED = 130


@dataclass
class LoadStats:
    items: int = 0
    pages: int = 0
    upserted: int = 0
    stale: int = 0
    dead_letters: int = 0
    pruned: int = 0
    segments_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Snapshot:
    """The backfill: every Scan segment in its own thread with its own sink, then the prune."""

    def __init__(
        self,
        spec: TableSpec,
        target: TargetSpec,
        ddb: Any,
        info: TableInfo,
        clock: AwsClock,
        *,
        sink_factory: Callable[[], Sink] | None = None,
    ) -> None:
        self.spec = spec
        self.target = target
        self.ddb = ddb
        self.info = info
        self.clock = clock
        self.stats = LoadStats()
        self.first_version: int | None = None  # the smallest page version: the prune's bound
        self.complete = False  # every segment read to its end, and pruned
        self.started: float | None = None
        self.elapsed = 0.0
        self._sink_factory = sink_factory or self._open_sink
        self._counter = itertools.count(1)  # positions of scanned items; 0 is the prune's
        self._lock = threading.Lock()

    def _open_sink(self) -> Sink:
        retention = timedelta(seconds=self.spec.tombstone_retention)
        return open_sink(self.target, tombstone_retention=retention, delete_mode=self.spec.delete_mode)

    # ---- running ----
    def run(self, stop: Stoppable) -> None:
        """Scan every segment (in parallel), then prune; raises the first failure after stopping the rest."""
        self.started = time.monotonic()
        failures: list[BaseException] = []

        def segment_main(segment: int) -> None:
            try:
                self._segment(segment, stop)
            except BaseException as error:
                failures.append(error)
                stop.set()  # the others stop after their current page

        threads = [
            threading.Thread(target=segment_main, args=(segment,), name=f"scan-{segment}", daemon=True)
            for segment in range(self.spec.segments)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.elapsed = time.monotonic() - self.started
        if failures:
            raise failures[0]
        if stop.is_set():
            return
        if self.spec.prune:
            self._prune()
        self.elapsed = time.monotonic() - self.started
        self.complete = True

    def _segment(self, segment: int, stop: Stoppable) -> None:
        sink = self._sink_factory()
        try:
            pending: list[ChangeEvent] = []
            letters: list[DeadLetter] = []
            pages = dynamodb.scan_segment(self.ddb, self.spec, segment, self.spec.segments, self.clock, stop)
            finished = False
            for page in pages:
                finished = page.last
                with self._lock:
                    if self.first_version is None or page.version < self.first_version:
                        self.first_version = page.version
                for raw in page.items:
                    counter = next(self._counter)
                    try:
                        pending.append(dynamodb.snapshot_event(raw, self.info, page.version, counter))
                    except (ValueError, RecursionError) as error:
                        letters.append(self._letter(raw, counter, error))
                    if len(pending) >= self.spec.batch_size:
                        self._apply(sink, pending)
                        pending = []
                if letters:
                    sink.dead_letter(letters)
                    self.stats.add(dead_letters=len(letters))
                    letters = []
                self.stats.add(items=len(page.items), pages=1)
            self._apply(sink, pending)
            if finished:
                self.stats.add(segments_done=1)
        finally:
            sink.close()

    def _letter(self, raw: dict[str, Any], counter: int, error: BaseException) -> DeadLetter:
        text = json.dumps(dynamodb.wire_item(raw), ensure_ascii=False, default=str)
        return DeadLetter(text, f"undecodable item: {error}", SNAPSHOT_SHARD, str(counter))

    def _apply(self, sink: Sink, events: list[ChangeEvent]) -> None:
        if not events:
            return
        result = sink.apply(coalesce(events))
        self.stats.add(upserted=result.upserted, stale=result.skipped_stale, dead_letters=len(result.dead_letters))

    def _prune(self) -> None:
        """Remove rows the scan did not see and no newer change wrote: left over from before this load."""
        if self.first_version is None:  # nothing was read, not even an empty page: nothing to compare with
            return
        reader = TargetReader(self.target, self.info.key_types)
        sink = self._sink_factory()
        try:
            # A page of stale keys at a time, each page one batch of REMOVEs: memory holds one batch, whatever the
            # number of stale rows. The keyset paging skips the rows the batches before deleted.
            for keys in reader.keys_older_than(self.first_version, page_rows=self.spec.batch_size):
                events = [
                    ChangeEvent(
                        "REMOVE", self.info.name, key, self.info.key_types, None, self.first_version, PRUNE_POSITION
                    )
                    for key in keys
                ]
                result = sink.apply(events)
                self.stats.add(pruned=result.deleted)
        finally:
            sink.close()
            reader.close()

    # ---- reporting ----
    def progress(self) -> str:
        stats, estimate = self.stats, self.info.item_count
        elapsed = time.monotonic() - (self.started or time.monotonic())
        per_second = rate(stats.items, elapsed)  # None over a handful of items: no figure to speak of
        line = f"snapshot: {stats.items} items"
        if estimate:
            line += f" of about {estimate} ({min(stats.items / estimate, 1.0):.0%}; DynamoDB's estimate)"
        if per_second:
            line += f", {per_second:.0f}/s"
        line += f", {stats.segments_done}/{self.spec.segments} segments done"
        if estimate > stats.items and per_second:
            line += f", about {_duration((estimate - stats.items) / per_second)} left"
        return line

    def summary(self) -> str:
        stats = self.stats
        per_second = rate(stats.items, self.elapsed)
        shown = f" ({per_second:.0f}/s)" if per_second else ""
        line = (
            f"snapshot of {self.info.name} done: {stats.items} items in {self.elapsed:.1f} s{shown}: "
            f"{stats.upserted} upserts, {stats.stale} stale, {stats.dead_letters} dead letters"
        )
        return line + (f", {stats.pruned} rows pruned" if self.spec.prune else "")


class SnapshotCompanion:
    """The snapshot in a thread beside the KCL worker (kcl/supervisor.py Companion)."""

    def __init__(self, snapshot: Snapshot, settle: float, once: bool = False) -> None:
        self.snapshot = snapshot
        self.settle = settle  # seconds after the scan's end from which a caught-up shard read its tip after it
        self.once = once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshot", daemon=True)
        self._finished: float | None = None
        self._error: str | None = None
        self._reported = False
        self._last_progress = time.monotonic()

    def _run(self) -> None:
        try:
            self.snapshot.run(self._stop)
        except Exception as error:
            self._error = f"the snapshot failed: {type(error).__name__}: {error}"
            return
        if self.snapshot.complete:
            self._finished = time.time()

    def start(self) -> None:
        say(f"snapshot of {self.snapshot.info.name}: {self.snapshot.spec.segments} segments")
        self._thread.start()

    def poll(self) -> str | None:
        if self._error:
            return self._error
        if self._finished is not None:
            if not self._reported:
                self._reported = True
                until = " until every shard is caught up (once=true)" if self.once else ""
                say(f"{self.snapshot.summary()}; following the stream{until}")
            return None
        if time.monotonic() - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = time.monotonic()
            say(self.snapshot.progress())
        return None

    def finished_at(self) -> float | None:
        return None if self._finished is None else self._finished + self.settle

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()


def prepare_target(target: TargetSpec, info: TableInfo, mapping: str | None = None) -> None:
    """Create the target's tables (with the mapping, which the scan's writers then read beside the table) and claim
    it for this DynamoDB table (TargetError when it carries another, or a mapping this one would change)."""
    from kcl_relay.mapping.spec import MappingError, load_mapping

    sink = open_sink(target, mapping=load_mapping(mapping) if mapping else None)
    try:
        try:
            sink.ensure_table(info.key_types)
        except MappingError as error:
            raise TargetError(str(error)) from None
        claimed = sink.claim_source_table(info.name)
    finally:
        sink.close()
    if claimed != info.name:
        raise TargetError(f"the target {target.describe()} carries DynamoDB table {claimed!r}, not {info.name!r}")


def load_table(spec: TableSpec, target: TargetSpec) -> int:
    """`kcl-relay load table dynamodb://...`: the full load, followed by the stream with `stream=`."""
    ddb = dynamodb.client(spec)
    clock = AwsClock()
    info = dynamodb.describe(spec, dynamodb.client(spec, preflight=True), clock)
    check_reachable(target)
    try:
        dialect_for(target).check_key(info.key_types)
    except ValueError as error:
        raise TargetError(f"{target.dialect} cannot hold the key of table {info.name}: {error}") from None
    if not clock.observed:
        say("no Date header from DynamoDB: snapshot versions come from this machine's clock")
    snapshot = Snapshot(spec, target, ddb, info, clock)
    if spec.stream is None:
        prepare_target(target, info, spec.mapping)
        return _scan_only(snapshot)
    return _scan_and_stream(spec, target, snapshot, clock)


def _scan_only(snapshot: Snapshot) -> int:
    stop = StopFlag()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            snapshot.run(stop)
        except BaseException as error:
            failure.append(error)

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()  # a StopFlag: an Event's set() could block on the lock of the main thread's own stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    estimate = snapshot.info.item_count
    say(f"snapshot of {snapshot.info.name} (about {estimate} items): {snapshot.spec.segments} segments")
    thread = threading.Thread(target=run, name="snapshot", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(PROGRESS_INTERVAL)
            if thread.is_alive() and not stop.is_set():
                say(snapshot.progress())
    finally:
        stop.set()
        thread.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        error = failure[0]
        say(f"error: the snapshot failed after {snapshot.stats.items} items: {type(error).__name__}: {error}")
        return 1
    if not snapshot.complete:
        say(f"interrupted after {snapshot.stats.items} items: the target is incomplete; run the full load again")
        return INTERRUPTED
    say(snapshot.summary())
    return 0


def stream_start(clock: AwsClock) -> datetime:
    """Where the stream starts: before any page of the scan that follows is read (see STREAM_LEAD)."""
    first = clock.snapshot_version() / 1_000_000 - STREAM_LEAD
    return datetime.fromtimestamp(math.floor(first), timezone.utc)


def _scan_and_stream(spec: TableSpec, target: TargetSpec, snapshot: Snapshot, clock: AwsClock) -> int:
    from kcl_relay.kcl.supervisor import run_worker
    from kcl_relay.relay import plan_worker
    from kcl_relay.source import kinesis

    start = stream_start(clock)  # taken before the scan begins: no change between the two is lost
    stream = spec.stream_from(start)
    # Checks Java, the jars, the target and the stream before anything starts; the scan refills the target itself.
    plan = plan_worker(stream, target, guard_target=False)
    prepare_target(target, snapshot.info, spec.mapping)
    application = plan.properties["applicationName"]
    if _has_lease_table(kinesis.client(stream, "dynamodb"), application):
        say(
            f"application {application} has a lease table: shards with a checkpoint resume from it, the others "
            f"start at {start.isoformat()}"
        )
    elif stream.is_dynamodb_streams:
        say(f"the DynamoDB stream of table {stream.stream} starts at its trim horizon, before the scan begins")
    else:
        say(f"stream {stream.stream} starts at {start.isoformat()}, before the scan begins")
    plan.companion = SnapshotCompanion(snapshot, settle=1.0 + 3 * stream.idle_sleep, once=stream.once)
    code = run_worker(plan)
    if code == 0 and not snapshot.complete:
        say(f"the snapshot stopped after {snapshot.stats.items} items: the target is incomplete; run it again")
        return INTERRUPTED
    if code == 0:
        say(
            f"to follow the stream from here on: kcl-relay load table '{_stream_url(spec, application)}' "
            "with the same target"
        )
    return code


def _has_lease_table(ddb: Any, application: str) -> bool:
    try:
        ddb.describe_table(TableName=application)
    except Exception:  # not found, or not allowed to look: the KCL will tell
        return False
    return True


def _stream_url(spec: TableSpec, application: str) -> str:
    """The stream URL that continues this relay from its checkpoints (never with credentials)."""
    from urllib.parse import urlsplit

    host = urlsplit(spec.endpoint_url).netloc if spec.endpoint_url else "aws"
    if spec.stream is not None and spec.stream.is_dynamodb_streams:
        return f"dynamodb+cdc://{host}/{spec.table}?region={spec.region}&app={application}"
    return f"kinesis+dynamodb+cdc://{host}/{spec.stream_name}?region={spec.region}&app={application}"
