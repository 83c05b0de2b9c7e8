"""Redrive, the full load's prune and the target reader page through their tables: no statement fetches more than
a page, and the pages add up to every row exactly once, across page boundaries, on CrateDB, PostgreSQL and SQLite
(keys with quotes, backslashes, characters above U+FFFF and just below it, composite keys, exact numbers).

Verify's paging against DynamoDB is in tests/integration/test_fullload.py (it needs the emulators).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kcl_relay import fullload, redrive
from kcl_relay.cdc.event import ChangeEvent, DeadLetter, Item, KeyType, Position, canonical_key
from kcl_relay.cdc.values import parse_number
from kcl_relay.redrive import DeadLetterTable
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX
from kcl_relay.sink.reader import TargetReader
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter
from kcl_relay.source.dynamodb import TableInfo
from kcl_relay.source.table_url import parse_table
from tests.support.cleanup import drop_target_tables
from tests.support.records import cdc_record
from tests.support.sink_suite import T0
from tests.support.tables import read_items

KEY_TYPES: dict[str, KeyType] = {"tenant": "S", "id": "N"}
# Text that sorts differently by UTF-8 bytes and by UTF-16 units (CrateDB's range filter and its ORDER BY), quotes,
# backslashes, LIKE wildcards, the empty string; numbers a double cannot hold, negative, fractional.
TENANTS = ["", "a'b", 'q"d', "back\\slash", "%_", "ключ", "🔑", "\ue000", "\uffff", "z"]
# Enough of those in every shard that CrateDB's sort by the column itself came out of order (the check of the
# reader's keyset on CrateDB; see TargetReader._text).
DENSE = [base + tail for base in ("🔑", "\ue000", "\uffff", "a") for tail in ("1", "🔑")]
IDS = [0, -12345678901234567890123456789, 3.5, 99999999999999999999999999999999999999]


def odd_keys() -> list[Item]:
    return [{"tenant": tenant, "id": parse_number(str(n))} for tenant in TENANTS + DENSE for n in IDS]


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def spec(request: pytest.FixtureRequest) -> Iterator[TargetSpec]:
    target = parse_target(request.getfixturevalue(f"{request.param}_url"), f"mem_{uuid.uuid4().hex[:10]}")
    yield target
    drop_target_tables(target)


class Counted:
    """Wraps a `_query(sql, params)` method: the rows each SELECT returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type) -> None:
        self.selects: list[tuple[str, int]] = []
        real = owner._query

        def counted(this: Any, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
            rows = real(this, sql, params)
            if sql.lstrip().upper().startswith("SELECT"):
                self.selects.append((sql, len(rows)))
            return rows

        monkeypatch.setattr(owner, "_query", counted)

    def largest(self, containing: str = "") -> int:
        return max((rows for sql, rows in self.selects if containing in sql), default=0)


def write_rows(spec: TargetSpec, keys: list[Item], version: int) -> None:
    sink = TableWriter(spec)
    try:
        sink.ensure_table(KEY_TYPES)
        events = [
            ChangeEvent("INSERT", "t", key, KEY_TYPES, {**key, "n": i}, version, Position("shardId-0", str(i + 1)))
            for i, key in enumerate(keys)
        ]
        for start in range(0, len(events), 100):
            sink.apply(events[start : start + 100])
    finally:
        sink.close()


# ---- the target reader -------------------------------------------------------------------------------------------


def test_rows_and_stale_keys_page_through_odd_keys_exactly_once(
    spec: TargetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = odd_keys()
    write_rows(spec, keys, T0)
    fresh = [{"tenant": f"fresh {n}", "id": n} for n in range(5)]
    write_rows(spec, fresh, T0 + 10)
    counted = Counted(monkeypatch, TargetReader)
    reader = TargetReader(spec, KEY_TYPES)
    try:
        whole = [row.key_id for row in reader.rows(page_rows=1000)]
        for page in (1, 3, 7):
            counted.selects.clear()
            assert [row.key_id for row in reader.rows(page_rows=page)] == whole, f"pages of {page}"
            assert counted.largest() == page
        counted.selects.clear()
        stale = [key for page in reader.keys_older_than(T0 + 1, page_rows=4) for key in page]
        assert counted.largest() == 4
    finally:
        reader.close()
    assert sorted(whole) == sorted(canonical_key(key) for key in keys + fresh)
    old = {canonical_key(key) for key in keys}
    assert [canonical_key(key) for key in stale] == [key for key in whole if key in old], "in key order, once each"


# ---- the full load's prune ---------------------------------------------------------------------------------------


def test_prune_removes_more_stale_rows_than_a_batch(spec: TargetSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale rows well beyond one batch: each page of keys is one batch of REMOVEs, and every stale row goes (the
    keyset skips what the batches before deleted; a row newer than the load stays)."""
    keys = odd_keys()
    write_rows(spec, keys, T0)
    kept = [{"tenant": "newer", "id": 1}, {"tenant": "🔑", "id": 7}]
    write_rows(spec, kept, T0 + 10)
    table = parse_table("dynamodb://test:test@localhost:1/items?batch-size=6")
    info = TableInfo("items", ("tenant", "id"), KEY_TYPES, item_count=0, size_bytes=0)
    snapshot = fullload.Snapshot(table, spec, ddb=None, info=info, clock=None)  # type: ignore[arg-type]
    snapshot.first_version = T0 + 5
    counted = Counted(monkeypatch, TargetReader)
    batches: list[int] = []
    real_apply = TableWriter.apply

    def apply(this: TableWriter, events: list[ChangeEvent]) -> Any:
        batches.append(len(events))
        return real_apply(this, events)

    monkeypatch.setattr(TableWriter, "apply", apply)
    snapshot._prune()
    assert snapshot.stats.pruned == len(keys)
    assert counted.largest() <= 6 and max(batches) <= 6 and len(batches) >= len(keys) // 6
    assert sorted(read_items(spec, KEY_TYPES)) == sorted(canonical_key(key) for key in kept)


# ---- redrive -----------------------------------------------------------------------------------------------------


def dead_letters(spec: TargetSpec) -> list[tuple[str, str]]:
    relation = TableWriter(spec).dialect.relation(DEADLETTERS_SUFFIX)
    if spec.dialect == "cratedb":
        run_sql(spec, f"REFRESH TABLE {relation}")
    return sorted(run_sql(spec, f"SELECT sequence_number, reason FROM {relation}")[1])


def letter(raw: str, reason: str, n: int) -> DeadLetter:
    """A dead letter stamped n seconds after an hour ago: oldest first means something, on every database."""
    failed_at = datetime.now(timezone.utc) - timedelta(hours=1) + timedelta(seconds=n)
    return DeadLetter(raw, reason, "shardId-000000000000", str(n), failed_at=failed_at)


def store_letters(spec: TargetSpec, letters: list[DeadLetter]) -> None:
    sink = TableWriter(spec)
    try:
        sink.ensure_table({"id": "S"})
        sink.dead_letter(letters)
    finally:
        sink.close()


def test_redrive_drains_more_letters_than_a_batch(spec: TargetSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """23 dead letters in batches of 4: every one applied or kept once with today's reason (the fresh rows of those
    that fail again are not read again), no read fetches more than a batch."""
    good = [f"k{n}-{tenant}" for n, tenant in enumerate(TENANTS + TENANTS)]
    letters = [
        letter(json.dumps(cdc_record("INSERT", key, T0 + n, v=str(n))), "earlier", n) for n, key in enumerate(good)
    ]
    letters += [letter("{not json " + str(n), "undecodable", 100 + n) for n in range(3)]
    store_letters(spec, letters)
    counted = Counted(monkeypatch, DeadLetterTable)
    report = redrive.redrive(spec, batch_size=4)
    assert (report.letters, report.applied, report.failed_again) == (23, 20, 3)
    assert counted.largest("ORDER BY") == 4
    assert {key: item["v"] for key, item in read_items(spec, {"id": "S"}).items()} == {
        canonical_key({"id": key}): str(n) for n, key in enumerate(good)
    }
    remaining = dead_letters(spec)
    assert [seq for seq, _ in remaining] == ["100", "101", "102"]
    assert all(reason.startswith("undecodable") for _, reason in remaining)
    again = redrive.redrive(spec, batch_size=2)  # what failed again is there for the next run, once
    assert (again.letters, again.failed_again) == (3, 3) and len(dead_letters(spec)) == 3


def test_redrive_limit_takes_the_oldest_across_batches(spec: TargetSpec) -> None:
    letters = [letter(json.dumps(cdc_record("INSERT", f"k{n:02d}", T0 + n, v="x")), "rejected", n) for n in range(30)]
    store_letters(spec, list(reversed(letters)))  # written newest first: the order is failed_at's
    report = redrive.redrive(spec, batch_size=4, limit=10)
    assert report.letters == 10 and report.applied == 10
    assert sorted(read_items(spec, {"id": "S"})) == sorted(canonical_key({"id": f"k{n:02d}"}) for n in range(10))
    assert len(dead_letters(spec)) == 20


def test_the_drained_pages_stop_at_the_letters_of_the_start(spec: TargetSpec) -> None:
    """A letter written after the redrive took its bound (a worker still failing, or a clock behind) waits for the
    next run instead of being read again and again."""
    store_letters(spec, [letter("{bad", "undecodable", n) for n in range(5)])
    table = DeadLetterTable(spec)
    try:
        count, newest = table.bound()
        assert count == 5
        store_letters(spec, [DeadLetter("{later", "undecodable", "shardId-000000000000", "99")])  # stamped now
        seen = []
        while page := table.page(newest, 2):
            seen.extend(record.position.sequence_number for _, record in page)
            table.delete([row_id for row_id, _ in page])
    finally:
        table.close()
    assert sorted(seen) == ["0", "1", "2", "3", "4"]
    assert [seq for seq, _ in dead_letters(spec)] == ["99"]


# ---- memory, measured ----------------------------------------------------------------------------------------------


def traced_peak(run: Any) -> int:
    """Peak bytes Python allocated while `run()` ran (tracemalloc: deterministic, unlike RSS)."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_redrive_memory_stays_flat_as_letters_grow(sqlite_url: str) -> None:
    """4x the dead letters, at most 1.5x the peak: redrive holds a batch, not the table (the table held every
    letter before). SQLite only: the paging is the same on every database, shaped on all three above."""
    peaks = []
    for n, count in enumerate((1500, 6000)):
        spec = parse_target(sqlite_url, f"redrive_mem_{n}")
        payload = "x" * 1000
        records = [json.dumps(cdc_record("INSERT", f"k{i}", T0 + i, v=payload)) for i in range(count)]
        store_letters(spec, [letter(record, "earlier", i) for i, record in enumerate(records)])
        del records
        peaks.append(traced_peak(lambda spec=spec: redrive.redrive(spec, batch_size=100)))
        assert dead_letters(spec) == []
    assert peaks[1] < 1.5 * peaks[0], f"peak {peaks[0]} bytes for 1,500 letters, {peaks[1]} for 6,000"


def test_prune_memory_stays_flat_as_stale_rows_grow(sqlite_url: str) -> None:
    peaks = []
    info = TableInfo("items", ("tenant", "id"), KEY_TYPES, item_count=0, size_bytes=0)
    for n, count in enumerate((1500, 6000)):
        spec = parse_target(sqlite_url, f"prune_mem_{n}")
        write_rows(spec, [{"tenant": f"tenant {i:06d} " + "t" * 100, "id": i} for i in range(count)], T0)
        table = parse_table("dynamodb://test:test@localhost:1/items?batch-size=100")
        snapshot = fullload.Snapshot(table, spec, ddb=None, info=info, clock=None)  # type: ignore[arg-type]
        snapshot.first_version = T0 + 5
        peaks.append(traced_peak(snapshot._prune))
        assert snapshot.stats.pruned == count
    assert peaks[1] < 1.5 * peaks[0], f"peak {peaks[0]} bytes for 1,500 stale rows, {peaks[1]} for 6,000"
