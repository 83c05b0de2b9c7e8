"""Pipeline: when a batch is due, and what flush() does (decode, dead-letter, TTL, route, coalesce, apply)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType, Position, RawRecord
from kcl_relay.pipeline import FlushStats, Pipeline, PipelineOptions, routed_table_name, target_for
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.base import ApplyResult, Sink
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import open_sink
from tests.support.corpus import KEY_TYPES, make_corpus
from tests.support.records import cdc_record
from tests.support.reference import reference_state
from tests.support.tables import read_items

SHARD = "shardId-000000000000"
T0_MILLIS = 1_735_689_600_000


def cdc(
    op: str,
    ident: str,
    version: int,
    *,
    table: str = "orders",
    ttl: bool = False,
    **attributes: Any,
) -> dict[str, Any]:
    """One CDC record of key {"id": ident} at T0 + `version` ms; attributes are strings."""
    return cdc_record(op, ident, (T0_MILLIS + version) * 1000, table=table, ttl=ttl, **attributes)


def raw(record: dict[str, Any] | bytes, seq: int, shard: str = SHARD) -> RawRecord:
    data = record if isinstance(record, bytes) else json.dumps(record).encode()
    return RawRecord(data=data, position=Position(shard, str(seq)))


def numbered(*records: dict[str, Any] | bytes, start: int = 1) -> list[RawRecord]:
    return [raw(record, start + i) for i, record in enumerate(records)]


class FakeSink(Sink):
    def __init__(self, route: str | None, fail: bool = False) -> None:
        self.route = route
        self.fail = fail
        self.ensured: list[dict[str, KeyType]] = []
        self.batches: list[list[ChangeEvent]] = []
        self.letters: list[DeadLetter] = []
        self.closed = False

    def ensure_table(self, key_types: Mapping[str, KeyType]) -> None:
        self.ensured.append(dict(key_types))

    def apply(self, events: Sequence[ChangeEvent]) -> ApplyResult:
        if self.fail:
            raise RuntimeError("database down")
        self.batches.append(list(events))
        removes = sum(event.op == "REMOVE" for event in events)
        return ApplyResult(upserted=len(events) - removes, deleted=removes)

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def close(self) -> None:
        self.closed = True


class FakeSinks:
    """A sink factory that remembers every sink it made, by route."""

    def __init__(self, fail: bool = False) -> None:
        self.made: list[FakeSink] = []
        self.fail = fail

    def __call__(self, route: str | None) -> FakeSink:
        sink = FakeSink(route, self.fail)
        self.made.append(sink)
        return sink

    def by_route(self) -> dict[str | None, FakeSink]:
        return {sink.route: sink for sink in self.made}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def target(tmp_path: Path) -> TargetSpec:
    return parse_target(f"sqlite:///{tmp_path / 'relay.db'}", "t")


def sqlite_pipeline(target: TargetSpec, **options: Any) -> Pipeline:
    return Pipeline(lambda route: open_sink(target_for(target, route)), PipelineOptions(**options))


def rows(target: TargetSpec, table: str | None = None) -> dict[str, dict[str, Any]]:
    spec = target if table is None else target_for(target, table)
    return read_items(spec, {"id": "S"})


def dead_letters(target: TargetSpec) -> list[tuple[str, str, str, str]]:
    _, found = run_sql(
        target, f'SELECT raw, reason, shard_id, sequence_number FROM "{target.table}__deadletters" ORDER BY rowid'
    )
    return [tuple(row) for row in found]


# ---- due() ----------------------------------------------------------------------------------------------------


def test_due_by_size() -> None:
    pipeline = Pipeline(FakeSinks(), PipelineOptions(batch_size=3, buffer_time=60), clock=Clock(100.0))
    assert not pipeline.due()
    pipeline.add(numbered(cdc("INSERT", "a", 1), cdc("INSERT", "b", 2)))
    assert pipeline.pending == 2 and not pipeline.due()
    pipeline.add([raw(cdc("INSERT", "c", 3), 3)])
    assert pipeline.due()
    pipeline.flush()
    assert pipeline.pending == 0 and not pipeline.due()


def test_due_by_buffer_time() -> None:
    clock = Clock(100.0)
    pipeline = Pipeline(FakeSinks(), PipelineOptions(batch_size=100, buffer_time=0.5), clock=clock)
    clock.now = 500.0
    assert not pipeline.due(), "an empty pipeline is never due"
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    clock.now = 500.4
    pipeline.add([raw(cdc("INSERT", "b", 2), 2)])  # a later record does not restart the wait
    assert not pipeline.due()
    clock.now = 500.5
    assert pipeline.due()
    pipeline.flush()
    assert not pipeline.due()
    pipeline.add([raw(cdc("INSERT", "c", 3), 3)])  # the wait starts again with the first record after a flush
    clock.now = 500.9
    assert not pipeline.due()
    clock.now = 501.0
    assert pipeline.due()


def test_due_when_the_next_chance_to_flush_comes_after_buffer_time() -> None:
    clock = Clock(100.0)
    pipeline = Pipeline(FakeSinks(), PipelineOptions(batch_size=100, buffer_time=0.5), clock=clock)
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    assert not pipeline.due(lookahead=0.2), "the next delivery comes in 0.2 s: well within buffer-time"
    assert pipeline.due(lookahead=0.5), "waiting for the next delivery would keep it 0.5 s: flush now"
    clock.now = 100.35
    assert pipeline.due(lookahead=0.2)
    assert not pipeline.due(), "without a lookahead, only buffer-time itself"


def test_adding_nothing_starts_no_wait() -> None:
    clock = Clock(10.0)
    pipeline = Pipeline(FakeSinks(), PipelineOptions(buffer_time=1.0), clock=clock)
    pipeline.add([])
    clock.now = 20.0
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    clock.now = 20.5
    assert not pipeline.due()


def test_buffer_time_zero_is_due_at_once() -> None:
    pipeline = Pipeline(FakeSinks(), PipelineOptions(buffer_time=0), clock=Clock(7.0))
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    assert pipeline.due()


def test_due_by_buffer_time_with_a_clock_starting_at_zero() -> None:
    clock = Clock(0.0)
    pipeline = Pipeline(FakeSinks(), PipelineOptions(batch_size=100, buffer_time=0.5), clock=clock)
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    clock.now = 0.6
    assert pipeline.due()


# ---- flush() --------------------------------------------------------------------------------------------------


def test_flush_of_nothing_opens_no_sink() -> None:
    sinks = FakeSinks()
    stats = Pipeline(sinks).flush()
    assert stats == FlushStats()
    assert stats.last_position is None
    assert sinks.made == []


def test_flush_applies_to_sqlite(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target)
    pipeline.add(
        numbered(
            cdc("INSERT", "a", 1, v="1"),
            cdc("INSERT", "b", 2, v="1"),
            cdc("MODIFY", "a", 3, v="2"),
            cdc("INSERT", "c", 4, v="1"),
        )
    )
    stats = pipeline.flush()
    assert (stats.records, stats.upserted, stats.deleted, stats.dead_letters) == (4, 3, 0, 0)
    assert stats.last_position == Position(SHARD, "4")
    assert rows(target) == {
        '{"id":"a"}': {"id": "a", "v": "2"},
        '{"id":"b"}': {"id": "b", "v": "1"},
        '{"id":"c"}': {"id": "c", "v": "1"},
    }
    pipeline.add([raw(cdc("REMOVE", "b", 5), 5), raw(cdc("MODIFY", "c", 0, v="old"), 6)])
    stats = pipeline.flush()
    assert (stats.records, stats.upserted, stats.deleted, stats.stale, stats.applied) == (2, 0, 1, 1, 1)
    assert set(rows(target)) == {'{"id":"a"}', '{"id":"c"}'}
    assert rows(target)['{"id":"c"}']["v"] == "1"
    pipeline.close()


def test_undecodable_records_are_dead_lettered(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target)
    pipeline.add(
        numbered(
            b"this is not json",
            cdc("INSERT", "a", 1, v="1"),
            {"eventSource": "aws:kinesis", "eventName": "INSERT"},
            b"\xff\xfe",
        )
    )
    stats = pipeline.flush()
    assert (stats.records, stats.upserted, stats.dead_letters) == (4, 1, 3)
    assert stats.last_position == Position(SHARD, "4")
    assert rows(target) == {'{"id":"a"}': {"id": "a", "v": "1"}}
    letters = dead_letters(target)
    assert [(raw_text, shard, seq) for raw_text, _, shard, seq in letters] == [
        ("this is not json", SHARD, "1"),
        ('{"eventSource": "aws:kinesis", "eventName": "INSERT"}', SHARD, "3"),
        ("\ufffd\ufffd", SHARD, "4"),
    ]
    reasons = [reason for _, reason, _, _ in letters]
    assert reasons[0].startswith("undecodable: not JSON")
    assert reasons[1].startswith("undecodable: eventSource is not aws:dynamodb")
    assert all(reason.startswith("undecodable: ") for reason in reasons)
    pipeline.close()


@pytest.mark.parametrize("bug", [KeyError("NewImage"), AttributeError("'NoneType' object has no attribute 'get'")])
def test_a_decoder_bug_raises_from_flush_and_is_never_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    """A bug of ours must crash (the caller exits without a checkpoint), not dead-letter a well-formed record."""

    def buggy(record: RawRecord) -> ChangeEvent:
        if record.position.sequence_number == "2":
            raise bug
        return decode(record)

    monkeypatch.setattr("kcl_relay.pipeline.decode", buggy)
    sinks = FakeSinks()
    pipeline = Pipeline(sinks)
    pipeline.add(numbered(cdc("INSERT", "a", 1), cdc("INSERT", "b", 2), b"not json"))
    with pytest.raises(type(bug)):
        pipeline.flush()
    assert all(not sink.batches and not sink.letters for sink in sinks.made)
    assert pipeline.pending == 3, "everything stays staged: nothing may be checkpointed past"


def test_only_dead_letters_still_reach_the_target(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target)
    pipeline.add(numbered(b"garbage"))
    stats = pipeline.flush()
    assert (stats.records, stats.dead_letters, stats.applied) == (1, 1, 0)
    assert [letter[0] for letter in dead_letters(target)] == ["garbage"]
    pipeline.close()


def test_flush_coalesces_per_key() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks)
    pipeline.add(
        numbered(
            cdc("INSERT", "a", 1, v="1"),
            cdc("MODIFY", "a", 5, v="3"),
            cdc("MODIFY", "a", 3, v="2"),  # older than the one before: loses
            cdc("INSERT", "b", 2, v="1"),
        )
    )
    pipeline.flush()
    (sink,) = sinks.made
    (batch,) = sink.batches
    assert sorted((event.key["id"], event.image["v"] if event.image else None) for event in batch) == [
        ("a", "3"),
        ("b", "1"),
    ]
    assert sink.ensured == [{"id": "S"}]


def test_the_table_is_ensured_once_per_sink() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks)
    for seq in range(1, 4):
        pipeline.add([raw(cdc("INSERT", f"k{seq}", seq), seq)])
        pipeline.flush()
    (sink,) = sinks.made
    assert len(sink.ensured) == 1 and len(sink.batches) == 3


def test_close_closes_the_sinks_and_a_later_flush_opens_new_ones() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks)
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    pipeline.flush()
    pipeline.close()
    assert sinks.made[0].closed
    pipeline.add([raw(cdc("INSERT", "b", 2), 2)])
    pipeline.flush()
    assert len(sinks.made) == 2
    assert sinks.made[1].ensured == [{"id": "S"}] and not sinks.made[1].closed


def test_a_failing_sink_raises_from_flush() -> None:
    pipeline = Pipeline(FakeSinks(fail=True))
    pipeline.add(numbered(cdc("INSERT", "a", 1)))
    with pytest.raises(RuntimeError, match="database down"):
        pipeline.flush()


# ---- TTL ------------------------------------------------------------------------------------------------------


def test_ttl_ignore_keeps_rows_the_ttl_process_deleted(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target, ttl="ignore")
    pipeline.add(numbered(cdc("INSERT", "a", 1, v="1"), cdc("INSERT", "b", 2, v="1")))
    pipeline.flush()
    pipeline.add([raw(cdc("REMOVE", "a", 3, ttl=True), 3), raw(cdc("REMOVE", "b", 4), 4)])
    stats = pipeline.flush()
    assert (stats.records, stats.ttl_ignored, stats.deleted) == (2, 1, 1)
    assert stats.last_position == Position(SHARD, "4")
    assert rows(target) == {'{"id":"a"}': {"id": "a", "v": "1"}}, "a user's REMOVE still deletes"
    pipeline.close()


def test_ttl_delete_is_the_default(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target)
    pipeline.add(numbered(cdc("INSERT", "a", 1), cdc("REMOVE", "a", 2, ttl=True)))
    stats = pipeline.flush()
    assert stats.ttl_ignored == 0
    assert rows(target) == {}
    pipeline.close()


def test_ttl_ignore_skips_only_the_service_principal() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks, PipelineOptions(ttl="ignore"))
    other_service = cdc("REMOVE", "b", 2)
    other_service["userIdentity"] = {"type": "Service", "principalId": "somebody.amazonaws.com"}
    pipeline.add(numbered(cdc("REMOVE", "a", 1, ttl=True), other_service))
    stats = pipeline.flush()
    assert stats.ttl_ignored == 1
    (sink,) = sinks.made
    assert [event.key for event in sink.batches[0]] == [{"id": "b"}]


def test_only_ttl_expiries_open_no_sink() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks, PipelineOptions(ttl="ignore"))
    pipeline.add(numbered(cdc("REMOVE", "a", 1, ttl=True)))
    stats = pipeline.flush()
    assert (stats.records, stats.ttl_ignored, stats.last_position) == (1, 1, Position(SHARD, "1"))
    assert sinks.made == []


# ---- tables ---------------------------------------------------------------------------------------------------


def test_a_second_dynamodb_table_is_dead_lettered(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target)
    pipeline.add(numbered(cdc("INSERT", "a", 1, v="1"), cdc("INSERT", "x", 2, table="invoices")))
    stats = pipeline.flush()
    assert (stats.upserted, stats.dead_letters) == (1, 1)
    assert rows(target) == {'{"id":"a"}': {"id": "a", "v": "1"}}
    pipeline.add([raw(cdc("INSERT", "y", 3, table="invoices"), 3)])  # the first table seen stays the one
    assert pipeline.flush().dead_letters == 1
    letters = dead_letters(target)
    assert [(shard, seq) for _, _, shard, seq in letters] == [(SHARD, "2"), (SHARD, "3")]
    reason = letters[0][1]
    assert "'invoices'" in reason and "'orders'" in reason and "route-tables=true" in reason
    assert json.loads(letters[0][0])["tableName"] == "invoices"
    pipeline.close()


def test_source_table_names_the_expected_table() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks, PipelineOptions(source_table="invoices"))
    pipeline.add(numbered(cdc("INSERT", "a", 1), cdc("INSERT", "x", 2, table="invoices")))
    stats = pipeline.flush()
    assert (stats.upserted, stats.dead_letters) == (1, 1)
    sink = sinks.by_route()[None]
    assert [event.table_name for event in sink.batches[0]] == ["invoices"]
    (letter,) = sink.letters
    assert "'orders'" in letter.reason and "'invoices'" in letter.reason and "route-tables" in letter.reason
    assert letter.sequence_number == "1"


def test_route_tables_writes_each_table_to_its_own_target(target: TargetSpec) -> None:
    pipeline = sqlite_pipeline(target, route_tables=True)
    pipeline.add(
        numbered(
            cdc("INSERT", "a", 1, v="1", table="orders.v2-prod"),
            cdc("INSERT", "x", 2, v="9", table="invoices"),
            cdc("MODIFY", "a", 3, v="2", table="orders.v2-prod"),
            b"not json",
        )
    )
    stats = pipeline.flush()
    assert (stats.records, stats.upserted, stats.dead_letters) == (4, 2, 1)
    assert rows(target, "orders.v2-prod") == {'{"id":"a"}': {"id": "a", "v": "2"}}
    assert rows(target, "invoices") == {'{"id":"x"}': {"id": "x", "v": "9"}}
    _, tables = run_sql(target, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    names = {name for (name,) in tables}
    assert {"orders_v2_prod", "invoices"} <= names
    assert [letter[0] for letter in dead_letters(target)] == ["not json"]  # undecodable: the default target
    pipeline.close()


def test_route_tables_sink_routes() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks, PipelineOptions(route_tables=True))
    pipeline.add(numbered(cdc("INSERT", "a", 1, table="t1"), cdc("INSERT", "b", 2, table="t2")))
    pipeline.flush()
    assert set(sinks.by_route()) == {"t1", "t2"}
    assert [e.key for e in sinks.by_route()["t1"].batches[0]] == [{"id": "a"}]


@pytest.mark.parametrize(
    ("dynamodb_table", "expected"),
    [
        ("orders.v2-prod", "orders_v2_prod"),
        ("orders", "orders"),
        ("Orders_2024", "Orders_2024"),
        ("_private", "t_private"),
        ("-x", "t_x"),
        (".dot", "t_dot"),
        ("", "t"),
    ],
)
def test_routed_table_name(dynamodb_table: str, expected: str) -> None:
    assert routed_table_name(dynamodb_table) == expected


def test_target_for(target: TargetSpec) -> None:
    assert target_for(target, None) is target
    routed = target_for(target, "orders.v2-prod")
    assert routed.table == "orders_v2_prod"
    assert (routed.schema, routed.url, routed.dialect) == (target.schema, target.url, target.dialect)
    crate = parse_target("crate://localhost:4200/testdrive/cdc", None)
    assert target_for(crate, "a.b").qualified_table == "testdrive.a_b"


# ---- FlushStats -----------------------------------------------------------------------------------------------


def test_last_position_is_the_last_staged_record_whatever_became_of_it() -> None:
    sinks = FakeSinks()
    pipeline = Pipeline(sinks)
    pipeline.add(numbered(cdc("INSERT", "a", 1), cdc("INSERT", "b", 2)))
    pipeline.add([raw(b"garbage", 99, shard="shardId-000000000007")])
    stats = pipeline.flush()
    assert stats.last_position == Position("shardId-000000000007", "99")


def test_flush_stats_add() -> None:
    total = FlushStats()
    total.add(FlushStats(records=3, upserted=2, deleted=1, last_position=Position(SHARD, "3")))
    total.add(FlushStats(records=2, stale=1, ttl_ignored=1, dead_letters=1, last_position=Position(SHARD, "5")))
    total.add(FlushStats())
    assert (total.records, total.upserted, total.deleted, total.stale, total.ttl_ignored, total.dead_letters) == (
        5,
        2,
        1,
        1,
        1,
        1,
    )
    assert total.applied == 3
    assert total.last_position == Position(SHARD, "5"), "an empty flush keeps the last position"


# ---- the corpus -----------------------------------------------------------------------------------------------


def corpus_records(n: int, seed: int) -> list[RawRecord]:
    return [raw(record, number) for number, record in enumerate(make_corpus(n, seed), start=1)]


def decoded(records: list[RawRecord]) -> list[ChangeEvent]:
    events = []
    for record in records:
        try:
            events.append(decode(record))
        except DecodeError:
            continue
    return events


@pytest.mark.parametrize("seed", [1, 7, 2024])
@pytest.mark.parametrize("ttl", ["delete", "ignore"])
def test_corpus_in_random_batches_reaches_the_reference_state(target: TargetSpec, seed: int, ttl: str) -> None:
    records = corpus_records(500, seed)
    rng = random.Random(seed)
    clock = Clock(1000.0)
    pipeline = Pipeline(
        lambda route: open_sink(target_for(target, route)),
        PipelineOptions(batch_size=40, buffer_time=1.0, ttl=ttl),
        clock=clock,
    )
    totals = FlushStats()
    index = 0
    while index < len(records):
        size = rng.randint(1, 60)
        pipeline.add(records[index : index + size])
        index += size
        clock.now += rng.choice((0.0, 0.3, 1.5))
        if pipeline.due():
            totals.add(pipeline.flush())
    totals.add(pipeline.flush())
    pipeline.close()

    events = decoded(records)
    assert any(event.is_ttl_expiry for event in events), "the corpus must exercise TTL expiries"
    if ttl == "ignore":
        events = [event for event in events if not event.is_ttl_expiry]
    assert totals.records == len(records)
    assert totals.last_position == Position(SHARD, str(len(records)))
    assert totals.ttl_ignored == (sum(decode(r).is_ttl_expiry for r in records) if ttl == "ignore" else 0)
    assert read_items(target, KEY_TYPES) == reference_state(events)


def test_every_processor_agrees_on_the_first_table_seen(target: TargetSpec) -> None:
    """Two shards' processors (two pipelines) seeing different tables first: the first claim in the target wins."""
    shard_a, shard_b = sqlite_pipeline(target), sqlite_pipeline(target)
    shard_a.add([raw(cdc("INSERT", "u1", 1, table="users"), 1)])
    shard_a.flush()
    shard_b.add([raw(cdc("INSERT", "o1", 2, table="orders"), 1, shard="shardId-000000000001")])
    stats = shard_b.flush()
    assert stats.dead_letters == 1 and stats.upserted == 0
    assert set(rows(target)) == {'{"id":"u1"}'}
    assert "this relay carries 'users'" in dead_letters(target)[0][1]
    shard_a.close()
    shard_b.close()


class CountingSink(Sink):
    """Records the size of every apply() call."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def ensure_table(self, key_types: Mapping[str, KeyType]) -> None:
        pass

    def apply(self, events: Sequence[ChangeEvent]) -> ApplyResult:
        self.sizes.append(len(events))
        return ApplyResult(upserted=len(events))

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        pass

    def close(self) -> None:
        pass


def test_one_database_batch_holds_at_most_batch_size_records() -> None:
    sink = CountingSink()
    pipeline = Pipeline(lambda route: sink, PipelineOptions(batch_size=7))
    pipeline.add([raw(cdc("INSERT", f"k{i}", i), i) for i in range(1, 13)])  # one KCL batch larger than batch-size
    stats = pipeline.flush()
    assert sink.sizes == [7, 5] and stats.upserted == 12 and stats.records == 12
    assert stats.last_position is not None and stats.last_position.sequence_number == "12"


def test_a_flush_counts_the_mapped_values_that_went_to_aux(sqlite_url: str) -> None:
    from kcl_relay.mapping.spec import parse_mapping

    mapping = parse_mapping('[columns]\nat = { path = "at", type = "TIMESTAMP" }')
    spec = parse_target(sqlite_url, "orders")
    pipeline = Pipeline(lambda _route: open_sink(spec, mapping=mapping), PipelineOptions(batch_size=10))
    pipeline.add(numbered(cdc("INSERT", "a", 1, at="2026-11-27T10:00:00Z"), cdc("INSERT", "b", 2, at="Tuesday")))
    stats = pipeline.flush()
    assert (stats.upserted, stats.misfits, stats.dead_letters) == (2, 1, 0)
    total = FlushStats()
    total.add(stats)
    assert total.misfits == 1
