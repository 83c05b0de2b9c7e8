"""`kcl-relay verify`: does the target hold what the DynamoDB table holds? Exit 0 in sync, 1 on drift.

Full mode: a parallel Scan of the table gives a digest per key of the item *as the relay would store it*
(sink/reader.py), kept in a temporary SQLite file (sqlite3 of the standard library) rather than in memory; the
target is read in key order, a page at a time, and each page's keys are looked up there and taken out: counts, keys
missing in the target (what is left), keys extra in the target, keys whose items differ. Memory holds a page and
the keys that differ (the report names them), whatever the size of the table; disk holds a digest per item.

Sampled mode (`--sample F`): a fraction F of the table by Scan segments (about ten random segments out of
10/F; each segment is a slice of the key space), looked up by key in the target; and as many random target rows as F of
its count, looked up by key in DynamoDB (BatchGetItem), which finds extra rows too. Counts are then DynamoDB's
estimate against the target's count, and not part of the verdict.

Writers and the relay keep going while verify runs, so a key may differ only because its change is on its way.
Every difference is looked at again, by key on both sides, after --settle seconds (twice): what is still
different then is drift.
"""

from __future__ import annotations

import math
import os
import queue
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kcl_relay.cdc.event import Item, canonical_key
from kcl_relay.cdc.jsonenc import dumps, loads
from kcl_relay.cdc.values import from_item
from kcl_relay.kcl.supervisor import PROGRESS_INTERVAL, say
from kcl_relay.sink.admin import check_reachable
from kcl_relay.sink.reader import PAGE_ROWS, StoredRow, TargetReader, digest
from kcl_relay.sink.target import TargetError, TargetSpec
from kcl_relay.source import dynamodb
from kcl_relay.source.dynamodb import AwsClock, TableInfo
from kcl_relay.source.table_url import TableSpec
from kcl_relay.source.url import SourceError

__all__ = ["Report", "VerifyOptions", "compare", "run"]

IN_SYNC, DRIFT, FAILED = 0, 1, 2
SAMPLE_PICKS = 10  # a sample reads about this many Scan segments, each of about fraction/10 of the table
MAX_SEGMENTS = 1_000_000  # DynamoDB's limit of TotalSegments
SETTLE_ROUNDS = 2


@dataclass(frozen=True)
class VerifyOptions:
    sample: float | None = None  # None: compare everything
    settle: float = 5.0  # seconds before differences are looked at again; 0: no second look
    show: int = 10  # keys named per kind of difference
    as_json: bool = False


@dataclass
class Report:
    mode: str  # "full" or "sampled"
    dynamodb_items: int  # items read from DynamoDB (all of them, or the sample)
    target_rows: int  # rows read from the target (all of them), or its count (sampled)
    estimate: int  # DynamoDB's item count estimate
    checked_rows: int = 0  # sampled: target rows looked up in DynamoDB
    missing: list[str] = field(default_factory=list)  # key ids
    extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # DynamoDB items the relay could never store

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.undecodable)

    def to_json(self, show: int) -> str:
        def first(keys: list[str]) -> list[Any]:
            return [loads(key) for key in sorted(keys)[:show]]

        return dumps(
            {
                "in_sync": self.in_sync,
                "mode": self.mode,
                "dynamodb_items": self.dynamodb_items,
                "target_rows": self.target_rows,
                "dynamodb_estimate": self.estimate,
                "target_rows_checked": self.checked_rows,
                "missing": len(self.missing),
                "extra": len(self.extra),
                "differing": len(self.differing),
                "undecodable": len(self.undecodable),
                "first_missing": first(self.missing),
                "first_extra": first(self.extra),
                "first_differing": first(self.differing),
                "first_undecodable": first(self.undecodable),
            }
        )

    def lines(self, table: str, target: str, show: int) -> list[str]:
        if self.mode == "full":
            out = [f"DynamoDB table {table}: {self.dynamodb_items} items", f"target {target}: {self.target_rows} rows"]
        else:
            out = [
                f"DynamoDB table {table}: {self.dynamodb_items} items sampled (about {self.estimate} in all)",
                f"target {target}: {self.checked_rows} of {self.target_rows} rows sampled",
            ]
        for name, keys in (
            ("missing in the target", self.missing),
            ("extra in the target", self.extra),
            ("differing", self.differing),
            ("undecodable in DynamoDB", self.undecodable),
        ):
            if keys:
                named = ", ".join(sorted(keys)[:show]) + (", ..." if len(keys) > show else "")
                out.append(f"{name}: {len(keys)}" + (f": {named}" if show else ""))
        total = len(self.missing) + len(self.extra) + len(self.differing) + len(self.undecodable)
        out.append("in sync" if self.in_sync else f"drift: {total} keys")
        return out


class _Digests:
    """key_id -> digest of the DynamoDB items read, filled by several scan threads; on disk, in a temporary SQLite
    file, so that a table of any size is compared in bounded memory."""

    CHUNK = 500  # keys per statement: below SQLite's limit of host parameters

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kcl-relay-verify-")
        self._db = sqlite3.connect(
            os.path.join(self._dir.name, "digests.db"), isolation_level=None, check_same_thread=False
        )
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -8192", "temp_store = FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE items (key_id BLOB PRIMARY KEY, digest BLOB NOT NULL) WITHOUT ROWID")
        self._count = 0
        self.undecodable: list[str] = []
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    def add(self, found: dict[str, bytes], bad: list[str]) -> None:
        with self.lock:
            self._db.execute("BEGIN")
            rows = [(_b(key_id), value) for key_id, value in found.items()]
            self._count += self._db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?)", rows).rowcount
            self._db.execute("COMMIT")
            self.undecodable.extend(bad)

    def take(self, key_ids: Sequence[str]) -> dict[str, bytes]:
        """The digests of these keys that were read, removed from the store (what is left is missing)."""
        found: dict[str, bytes] = {}
        with self.lock:
            for start in range(0, len(key_ids), self.CHUNK):
                chunk = [_b(key_id) for key_id in key_ids[start : start + self.CHUNK]]
                marks = ", ".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key_id, digest FROM items WHERE key_id IN ({marks})", chunk)
                found.update((_s(key), digest) for key, digest in rows)
                self._db.execute(f"DELETE FROM items WHERE key_id IN ({marks})", chunk)
        return found

    def pages(self) -> Iterator[dict[str, bytes]]:
        """What the store holds, CHUNK keys at a time (keyset paging by key)."""
        after = b""
        while True:
            with self.lock:
                rows = self._db.execute(
                    "SELECT key_id, digest FROM items WHERE key_id > ? ORDER BY key_id LIMIT ?", (after, self.CHUNK)
                ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield {_s(key): digest for key, digest in rows}

    def __contains__(self, key_id: object) -> bool:
        with self.lock:
            sql = "SELECT 1 FROM items WHERE key_id = ?"
            return self._db.execute(sql, (_b(str(key_id)),)).fetchone() is not None


def _b(key_id: str) -> bytes:
    return key_id.encode("utf-8", errors="surrogatepass")


def _s(key_id: bytes) -> str:
    return key_id.decode("utf-8", errors="surrogatepass")


def _scan_digests(
    ddb: Any,
    spec: TableSpec,
    info: TableInfo,
    stored: Callable[[Any], Item],
    segments: Sequence[int],
    total: int,
) -> _Digests:
    """Digest every item of these Scan segments (out of `total`), spec.segments threads at a time."""
    result = _Digests()
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for segment in segments:
        work.put(segment)
    stop = threading.Event()
    failures: list[BaseException] = []
    clock = AwsClock()  # the versions do not matter here; scan_segment wants one

    def worker() -> None:
        try:
            while not stop.is_set():
                try:
                    segment = work.get_nowait()
                except queue.Empty:
                    return
                for page in dynamodb.scan_segment(ddb, spec, segment, total, clock, stop):
                    found, bad = {}, []
                    for raw in page.items:
                        try:
                            event = dynamodb.snapshot_event(raw, info, 0, 1)
                        except (ValueError, RecursionError):
                            bad.append(_raw_key_id(raw, info))
                            continue
                        found[event.key_id] = digest(stored(event))
                    result.add(found, bad)
        except BaseException as error:
            failures.append(error)
            stop.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(spec.segments, len(segments)))]
    for thread in threads:
        thread.start()
    last_report = time.monotonic()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.2)
        if time.monotonic() - last_report >= PROGRESS_INTERVAL:
            last_report = time.monotonic()
            say(f"verify: {len(result)} DynamoDB items read")
    if failures:
        result.close()
        raise failures[0]
    return result


def _raw_key_id(raw: dict[str, Any], info: TableInfo) -> str:
    """The key of an item that did not decode as a whole (its key attributes almost always do)."""
    wire = dynamodb.wire_item({name: raw[name] for name in info.key_names if name in raw})
    try:
        return canonical_key(from_item(wire))
    except ValueError:
        return dumps(wire)


class _Lookup:
    """Both sides of some keys, by key: for the second looks and for the sampled mode."""

    def __init__(self, ddb: Any, spec: TableSpec, info: TableInfo, reader: TargetReader) -> None:
        self.ddb, self.spec, self.info, self.reader = ddb, spec, info, reader

    def dynamodb(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        keys = [dynamodb.typed_key(loads(key_id), self.info.key_types) for key_id in key_ids]
        found: dict[str, bytes] = {}
        for raw in dynamodb.batch_get(self.ddb, self.spec.table, keys, consistent=True):
            event = dynamodb.snapshot_event(raw, self.info, 0, 1)
            found[event.key_id] = digest(self.reader.stored_item(event))
        return found

    def target(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        rows = self.reader.rows_by_keys([loads(key_id) for key_id in key_ids])
        return {key_id: digest(row.item) for key_id, row in rows.items()}


def _classify(keys: Iterable[str], source: dict[str, bytes], target: dict[str, bytes], report: Report) -> None:
    for key_id in keys:
        in_source, in_target = source.get(key_id), target.get(key_id)
        if in_source is None and in_target is None:
            continue
        if in_target is None:
            report.missing.append(key_id)
        elif in_source is None:
            report.extra.append(key_id)
        elif in_source != in_target:
            report.differing.append(key_id)


def _settle(report: Report, lookup: _Lookup, seconds: float) -> None:
    """Look at every difference again, by key on both sides; keep what is still different."""
    for _ in range(SETTLE_ROUNDS):
        keys = sorted({*report.missing, *report.extra, *report.differing})
        if not keys or seconds <= 0:
            return
        say(f"verify: {len(keys)} keys differ; looking at them again in {seconds:g} s")
        time.sleep(seconds)
        source, target = lookup.dynamodb(keys), lookup.target(keys)
        report.missing, report.extra, report.differing = [], [], []
        _classify(keys, source, target, report)


def _full(ddb: Any, spec: TableSpec, info: TableInfo, reader: TargetReader) -> Report:
    digests = _scan_digests(ddb, spec, info, reader.stored_item, range(spec.segments), spec.segments)
    try:
        report = Report(
            "full", dynamodb_items=len(digests) + len(digests.undecodable), target_rows=0, estimate=info.item_count
        )
        report.undecodable = digests.undecodable
        last_report = time.monotonic()
        if reader.exists():
            for rows in _chunks(reader.rows(PAGE_ROWS), PAGE_ROWS):
                report.target_rows += len(rows)
                if time.monotonic() - last_report >= PROGRESS_INTERVAL:
                    last_report = time.monotonic()
                    say(f"verify: {report.target_rows} target rows read")
                source = digests.take([row.key_id for row in rows])
                for row in rows:
                    expected = source.get(row.key_id)
                    if expected is None:
                        report.extra.append(row.key_id)
                    elif expected != digest(row.item):
                        report.differing.append(row.key_id)
        for left in digests.pages():
            report.missing.extend(left)
    finally:
        digests.close()
    return report


def _chunks(rows: Iterable[StoredRow], size: int) -> Iterator[list[StoredRow]]:
    chunk: list[StoredRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sampled(ddb: Any, spec: TableSpec, info: TableInfo, reader: TargetReader, fraction: float) -> Report:
    total = min(MAX_SEGMENTS, math.ceil(SAMPLE_PICKS / fraction))
    chosen = random.sample(range(total), min(total, max(1, round(fraction * total))))
    digests = _scan_digests(ddb, spec, info, reader.stored_item, chosen, total)
    try:
        exists = reader.exists()
        count = reader.count() if exists else 0
        report = Report(
            "sampled",
            dynamodb_items=len(digests) + len(digests.undecodable),
            target_rows=count,
            estimate=info.item_count,
        )
        report.undecodable = digests.undecodable
        lookup = _Lookup(ddb, spec, info, reader)
        for sampled in digests.pages():  # the sampled items, a chunk at a time, looked up in the target
            _classify(sampled, sampled, lookup.target(sampled) if exists else {}, report)
        rows: list[StoredRow] = reader.sample(max(1, math.ceil(fraction * count))) if count else []
        report.checked_rows = len(rows)
        checked = {row.key_id: digest(row.item) for row in rows if row.key_id not in digests}
        _classify(checked, lookup.dynamodb(checked), checked, report)
    finally:
        digests.close()
    return report


def compare(spec: TableSpec, target: TargetSpec, options: VerifyOptions) -> tuple[Report, TableInfo]:
    """Compare the table with the target (raises SourceError/TargetError before anything when they are unusable)."""
    ddb = dynamodb.client(spec)
    info = dynamodb.describe(spec, dynamodb.client(spec, preflight=True))
    check_reachable(target)
    reader = TargetReader(target, info.key_types)
    try:
        if options.sample is None:
            report = _full(ddb, spec, info, reader)
        else:
            report = _sampled(ddb, spec, info, reader, options.sample)
        _settle(report, _Lookup(ddb, spec, info, reader), options.settle)
    finally:
        reader.close()
    return report, info


def run(spec: TableSpec, target: TargetSpec, options: VerifyOptions, out: Callable[[str], None] = print) -> int:
    """`kcl-relay verify`: the summary on stdout; 0 in sync, 1 on drift, 2 when the comparison failed."""
    try:
        report, _info = compare(spec, target, options)
    except (SourceError, TargetError):
        raise  # one line, exit code 2, from the command line
    except Exception as error:  # AWS or the database failed past their retries
        say(f"error: the comparison failed: {type(error).__name__}: {error}")
        return FAILED
    if options.as_json:
        out(report.to_json(options.show))
    else:
        for line in report.lines(spec.table, target.describe(), options.show):
            out(line)
    return IN_SYNC if report.in_sync else DRIFT
