"""The sink semantics, one suite for every database: tests/integration/test_sink_<db>.py subclass SinkSemantics.

A subclass provides the `target_url` fixture and the few database-specific hooks: how to read the table back as
items, what the expected items look like there, and a row value the database itself rejects.

Every test runs twice: plain, and with SUITE_MAPPING (kcl_relay/mapping: typed columns for the attributes the
tests and the corpus use, fitting and misfitting values alike). Mapped, the table is read back through the relay's
own reader (TargetReader: the columns put back at their paths) and compared with the items exactly.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import random
import threading
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import ChangeEvent, DeadLetter, Item, KeyType, Op, Position, RawRecord, canonical_key
from kcl_relay.mapping.spec import TableMapping, parse_mapping
from kcl_relay.sink.admin import run_sql, show_table
from kcl_relay.sink.base import ApplyResult
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX, Dialect
from kcl_relay.sink.reader import TargetReader, comparable, digest
from kcl_relay.sink.retry import RetryPolicy
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter, dialect_for
from tests.support.corpus import make_corpus
from tests.support.e2e import wait_for
from tests.support.reference import reference_state

KEY_TYPES: dict[str, KeyType] = {"id": "S"}
# Columns for the suite's attributes (v, n, x, nested.x, rev, value) and the corpus's (tests/support/corpus.py). Text
# `v` and `value` also take numbers, booleans and maps in the tests: those go to aux, intact.
SUITE_MAPPING = parse_mapping(
    """
[columns]
v = { path = "v", type = "TEXT" }
n = { path = "n", type = "BIGINT" }
x = { path = "x", type = "BIGINT" }
nested_x = { path = "nested.x", type = "BIGINT" }
rev = { path = "rev", type = "BIGINT" }
value = { path = "value", type = "TEXT" }
status = { path = "status", type = "TEXT" }
revision = { path = "revision", type = "BIGINT" }
amount = { path = "amount", type = "NUMERIC(38, 2)" }
geo_lat = { path = "address.geo.lat", type = "DOUBLE" }
zip = { path = "address.zip", type = "BIGINT" }
flag = { path = "flag", type = "BOOLEAN" }
tags = { path = "tags", type = "ARRAY(TEXT)" }
scores = { path = "scores", type = "ARRAY(DOUBLE)" }
lines = { path = "lines", type = "ARRAY(OBJECT)" }
""",
    "the suite's mapping",
).default
T0 = 1_735_689_600_000_000  # µs


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def change(op: Op, ident: str, version: int, seq: int, **attributes: Any) -> ChangeEvent:
    """One event on key {"id": ident}; `version` in µs after T0, `seq` its stream position."""
    key = {"id": ident}
    image = None if op == "REMOVE" else {"id": ident, **attributes}
    return ChangeEvent(op, "t", key, KEY_TYPES, image, T0 + version, Position("shardId-0", str(seq)))


# Key schemas as DynamoDB tables have them: a hash key, or hash + range, of types S, N and B.
KEY_SCHEMAS: dict[str, dict[str, KeyType]] = {
    "S": {"id": "S"},
    "N": {"id": "N"},
    "B": {"id": "B"},
    "S+N": {"customer": "S", "order": "N"},
    "N+B": {"bucket": "N", "blob": "B"},
    "B+S": {"blob": "B", "name": "S"},
}


def key_value(key_type: KeyType, n: int) -> Any:
    """A distinct key attribute value for n, as the decoder gives it: text, exact numbers (38 digits, fractions,
    negatives), base64 text."""
    if key_type == "S":
        return f"k{n}-ü"
    if key_type == "B":
        return base64.b64encode(n.to_bytes(4, "big") + b"\x00\xff").decode("ascii")
    if n % 3 == 0:
        return n
    if n % 3 == 1:
        return -Decimal(f"{n}.25")
    return int(f"9{n:037d}")  # 38 digits: neither BIGINT nor DOUBLE holds it


def keyed(key_types: Mapping[str, KeyType], n: int, op: Op, version: int, seq: int, **attributes: Any) -> ChangeEvent:
    """One event on key number n of a schema; `version` in µs after T0, `seq` its stream position."""
    key = {
        name: key_value(kind, n if index == 0 else n * 7 + 1) for index, (name, kind) in enumerate(key_types.items())
    }
    image = None if op == "REMOVE" else {**key, **attributes}
    return ChangeEvent(op, "t", key, dict(key_types), image, T0 + version, Position("shardId-000000000000", str(seq)))


def history(key_types: Mapping[str, KeyType], keys: int, events: int, seed: int) -> list[ChangeEvent]:
    """A stream in delivery order: per key INSERT, MODIFY and REMOVE as a table sees them (with a MODIFY of a row
    never seen and a REMOVE of a missing one now and then), attributes of changing types."""
    rng = random.Random(seed)
    present: set[int] = set()
    out = []
    for seq in range(1, events + 1):
        n = rng.randrange(keys)
        if n in present:
            op: Op = rng.choice(("MODIFY", "MODIFY", "REMOVE"))
        else:
            op = rng.choice(("INSERT", "INSERT", "INSERT", "MODIFY", "REMOVE"))
        (present.discard if op == "REMOVE" else present.add)(n)
        value = rng.choice((seq, f"text-{seq}", seq % 2 == 0, None, {"nested": seq}, [seq, seq + 1]))
        out.append(keyed(key_types, n, op, seq * 10, seq, rev=seq, value=value))
    return out


def merge(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """pk | data | aux, checking that no attribute sits in two of them."""
    item: dict[str, Any] = {}
    for part in parts:
        assert not set(item) & set(part), f"attribute in two columns: {set(item) & set(part)}"
        item.update(part)
    return item


def wide_attributes(prefix: str, count: int, seq: int) -> dict[str, Any]:
    """`count` attributes of mixed types, every fourth an object (three columns in CrateDB)."""
    values: dict[str, Any] = {}
    for j in range(count):
        kind = j % 4
        if kind == 0:
            values[f"{prefix}{j}"] = j * seq
        elif kind == 1:
            values[f"{prefix}{j}"] = f"v{j}-{seq}"
        elif kind == 2:
            values[f"{prefix}{j}"] = {"n": j, "s": [f"{seq}"]}
        else:
            values[f"{prefix}{j}"] = j % 3 == 0
    return values


def wide_events() -> list[ChangeEvent]:
    """Items wider than a CrateDB table may be (1,000 columns): 1,200 and 2,000 attributes, named alike and apart,
    then a narrow item and a MODIFY of a wide one to other attributes."""
    return [
        change("INSERT", "w1", 1, 1, **wide_attributes("a", 1200, 1)),
        change("INSERT", "w2", 1, 2, **wide_attributes("a", 1200, 2)),
        change("INSERT", "w3", 1, 3, **wide_attributes("b", 2000, 3)),
        change("INSERT", "narrow", 1, 4, a0=5, a1="x", fresh={"deep": [1, 2]}),
        change("MODIFY", "w1", 2, 5, **wide_attributes("c", 2000, 5)),
        change("INSERT", "w4", 1, 6, **wide_attributes("a", 2000, 6)),
    ]


MARK = "\ufdd0"  # the marker of PostgreSQL's NUL escape (kcl_relay/sink/postgresql.py): must round-trip too
NUL_KEY_TYPES: dict[str, KeyType] = {"h": "S", "r": "S"}


def nul_items() -> list[Item]:
    """Valid DynamoDB items with NUL (U+0000) and the escape's marker in values, names, nested map keys, string
    sets, lists and both key attributes; keys that are each other's escaped form must stay apart."""
    return [
        {
            "h": "a\x00b",
            "r": "\x00",
            "s": "x\x00y",
            "na\x00me": 1,
            "m": {"k\x00": {"deep\x00": "v\x00\x00"}, MARK: MARK + "0", "plain": True},
            "ss": ["", "\x00", "a\x00", MARK],
            "l": ["\x00", {"\x00": ["\x00", None]}, 5],
        },
        {"h": "a" + MARK + "0b", "r": "\x00", "s": "the escaped form of the first key, as text"},
        {"h": MARK, "r": MARK + "0", MARK + "1": MARK + "\x00", "lit": "\\u0000", "n\x00": {"\x00": MARK}},
        {"h": "plain", "r": "\x00" + MARK, "v": "\x00"},
        {"h": "plain", "r": "no-nul", MARK: ["\x00" + MARK]},
    ]


def nul_event(op: Op, item: Item, version: int, seq: int, **changes: Any) -> ChangeEvent:
    key = {name: item[name] for name in NUL_KEY_TYPES}
    image = None if op == "REMOVE" else {**item, **changes}
    return ChangeEvent(op, "t", key, dict(NUL_KEY_TYPES), image, T0 + version, Position("shardId-0", str(seq)))


def corpus_events(n: int, seed: int) -> list[ChangeEvent]:
    events = []
    for number, record in enumerate(make_corpus(n, seed), start=1):
        raw = RawRecord(json.dumps(record).encode("utf-8"), Position("shardId-000000000000", str(number)))
        try:
            events.append(decode(raw))
        except DecodeError:
            continue
    return events


def apply_in_random_batches(
    sink: TableWriter, events: Sequence[ChangeEvent], rng: random.Random, sizes: Sequence[int]
) -> Iterator[ApplyResult]:
    """Applies the events in order, coalesced, in batches of sizes rng picks; yields each batch's result."""
    start = 0
    while start < len(events):
        size = rng.choice(sizes)
        yield sink.apply(coalesce(events[start : start + size]))
        start += size


def share_out(events: Sequence[ChangeEvent], rng: random.Random, counts: Sequence[int]) -> list[list[ChangeEvent]]:
    """Each event to one of two workers or to both (a redelivery after a lease moved): how many, rng picks."""
    shares: list[list[ChangeEvent]] = [[], []]
    for event in events:
        for worker in rng.sample((0, 1), rng.choice(counts)):
            shares[worker].append(event)
    return shares


def run_at_once(jobs: Sequence[Callable[[], object]], timeout: float) -> None:
    """Runs the jobs at the same time, each in a thread; fails with what any of them raised."""
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not errors, errors


class SinkSemantics:
    """The semantics every sink must have, whatever the batch boundaries, order or number of workers."""

    # ---- hooks ----
    def read(self, spec: TargetSpec) -> dict[Hashable, Item]:
        """The target's rows as items (pk | data | aux), keyed like expected()."""
        raise NotImplementedError

    def expected(self, items: Mapping[str, Item], key_names: Sequence[str]) -> dict[Hashable, Item]:
        """reference_state() items (by key_id) as read() returns them."""
        return {key_id: item for key_id, item in items.items()}

    def poison(self, sink: TableWriter, spec: TargetSpec) -> tuple[str, dict[str, Any]]:
        """A key and attributes this database itself rejects for a row (after whatever setup that needs)."""
        raise NotImplementedError

    def make_dialect(self, spec: TargetSpec) -> Dialect | None:
        """The dialect the writers under test use; None: the target's own."""
        return None

    def refresh(self, spec: TargetSpec, relation: str) -> None:
        """Make committed writes visible to the next query (CrateDB only; never done by the relay itself)."""

    mapped = False  # set per test by the `mapping` fixture
    spec_seen: TargetSpec
    key_types_seen: dict[str, KeyType] = KEY_TYPES

    # ---- fixtures ----
    @pytest.fixture(params=[False, True], ids=["plain", "mapped"])
    def mapping(self, request: pytest.FixtureRequest) -> TableMapping | None:
        self.mapped = bool(request.param)
        return SUITE_MAPPING if request.param else None

    @pytest.fixture
    def spec(self, target_url: str) -> Iterator[TargetSpec]:
        spec = parse_target(target_url, f"t_{uuid.uuid4().hex[:12]}")
        yield spec
        self.drop_tables(spec)

    def drop_tables(self, spec: TargetSpec) -> None:
        """Drop a test's tables: a shared CrateDB holds 1,000 shards in all, and every table takes a few."""
        dialect = dialect_for(spec)
        for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
            self.execute(spec, f"DROP TABLE IF EXISTS {dialect.relation(suffix)}")

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def make_sink(
        self, spec: TargetSpec, clock: Clock, mapping: TableMapping | None
    ) -> Iterator[Callable[..., TableWriter]]:
        sinks: list[TableWriter] = []

        def make(**options: Any) -> TableWriter:
            options.setdefault("retry", RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.2))
            options.setdefault("clock", clock)
            options.setdefault("dialect", self.make_dialect(spec))
            options.setdefault("mapping", mapping)
            self.spec_seen = spec
            sink = TableWriter(spec, **options)
            ensure = sink.ensure_table

            def ensure_table(key_types: Mapping[str, KeyType]) -> None:
                self.key_types_seen = dict(key_types)  # the mapped reading needs them (numeric keys)
                ensure(key_types)

            sink.ensure_table = ensure_table  # type: ignore[method-assign]
            sinks.append(sink)
            return sink

        yield make
        for sink in sinks:
            sink.close()

    @pytest.fixture
    def sink(self, make_sink: Callable[..., TableWriter]) -> TableWriter:
        return make_sink()

    def execute(self, spec: TargetSpec, sql: str) -> None:
        """Run a statement and commit it (run_sql() never commits)."""
        engine = spec.create_engine()
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def count(self, sink: TableWriter, suffix: str = "") -> int:
        relation = sink.dialect.relation(suffix)
        self.refresh(sink.spec, relation)
        _, rows = run_sql(sink.spec, f"SELECT count(*) FROM {relation}")
        return int(rows[0][0])

    def items(self, spec: TargetSpec) -> dict[Hashable, Item]:
        if not self.mapped:
            return self.read(spec)
        reader = TargetReader(spec, self.key_types_seen)
        try:
            assert reader.mapping is not None and reader.mapping.describe() == SUITE_MAPPING.describe()  # kept
            return {row.key_id: row.item for row in reader.rows()}
        finally:
            reader.close()

    def expect(self, images: Mapping[str, Item]) -> dict[Hashable, Item]:
        by_key_id = {canonical_key({"id": image["id"]}): image for image in images.values()}
        return self.expected_items(by_key_id, sorted(KEY_TYPES))

    def expected_items(self, items: Mapping[str, Item], key_names: Sequence[str]) -> dict[Hashable, Item]:
        """expected(), or mapped: the items by key_id as TargetReader compares them (what this database holds for
        them: on CrateDB numbers beyond what its driver carries are text in aux, as verify sees them)."""
        if not self.mapped:
            return self.expected(items, key_names)
        reader = TargetReader(self.spec_seen, self.key_types_seen, mapping=SUITE_MAPPING)
        try:
            expected: dict[Hashable, Item] = {}
            for key_id, item in items.items():
                key = {name: item[name] for name in key_names}
                event = ChangeEvent("INSERT", "t", key, self.key_types_seen, dict(item), T0, Position("s", "1"))
                expected[key_id] = reader.stored_item(event)
            return expected
        finally:
            reader.close()

    # ---- tests ----
    def test_insert_modify_remove(self, sink: TableWriter, spec: TargetSpec) -> None:
        result = sink.apply([change("INSERT", "a", 1, 1, x=1, keep="k"), change("INSERT", "b", 1, 2, y="b")])
        assert (result.upserted, result.deleted, result.skipped_stale, result.dead_letters) == (2, 0, 0, [])
        result = sink.apply([change("MODIFY", "a", 2, 3, x=2), change("REMOVE", "b", 2, 4)])
        assert (result.upserted, result.deleted) == (1, 1)
        # the MODIFY installed the full new image: `keep` is gone
        assert self.items(spec) == self.expect({"a": {"id": "a", "x": 2}})
        assert self.count(sink, TOMBSTONES_SUFFIX) == 1

    def test_modify_of_unseen_row_creates_it_and_remove_of_missing_row_is_fine(
        self, sink: TableWriter, spec: TargetSpec
    ) -> None:
        result = sink.apply([change("MODIFY", "new", 5, 1, v="x"), change("REMOVE", "ghost", 5, 2)])
        assert (result.upserted, result.deleted, result.dead_letters) == (1, 1, [])
        assert self.items(spec) == self.expect({"new": {"id": "new", "v": "x"}})

    def test_idempotent(self, sink: TableWriter, spec: TargetSpec) -> None:
        batch = [change("INSERT", "a", 1, 1, n=1), change("MODIFY", "b", 1, 2, n=2), change("REMOVE", "c", 1, 3)]
        sink.apply(batch)
        first = self.items(spec)
        sink.apply(batch)
        sink.apply(list(reversed(batch)))
        assert self.items(spec) == first == self.expect({"a": {"id": "a", "n": 1}, "b": {"id": "b", "n": 2}})
        assert self.count(sink, TOMBSTONES_SUFFIX) == 1

    def test_older_after_newer_does_nothing(self, sink: TableWriter, spec: TargetSpec) -> None:
        sink.apply([change("MODIFY", "a", 10, 10, v="new")])
        result = sink.apply([change("INSERT", "a", 5, 5, v="old")])
        assert (result.upserted, result.skipped_stale) == (0, 1)
        result = sink.apply([change("REMOVE", "a", 7, 7)])  # older than the row: the row stays
        assert (result.deleted, result.skipped_stale) == (0, 1)
        assert self.items(spec) == self.expect({"a": {"id": "a", "v": "new"}})

    def test_late_older_write_after_remove_does_not_resurrect(self, sink: TableWriter, spec: TargetSpec) -> None:
        sink.apply([change("INSERT", "a", 1, 1, v=1)])
        sink.apply([change("REMOVE", "a", 3, 3)])
        result = sink.apply([change("MODIFY", "a", 2, 2, v=2), change("INSERT", "b", 2, 4)])
        assert (result.upserted, result.skipped_stale) == (1, 1)
        assert self.items(spec) == self.expect({"b": {"id": "b"}})
        sink.apply([change("INSERT", "a", 4, 5, v=4)])  # a newer INSERT does bring it back
        assert self.items(spec) == self.expect({"a": {"id": "a", "v": 4}, "b": {"id": "b"}})

    def test_ties_broken_by_order_token(self, sink: TableWriter, spec: TargetSpec) -> None:
        later, earlier = change("MODIFY", "a", 1, 900, v="later"), change("MODIFY", "a", 1, 12, v="earlier")
        sink.apply([later])
        assert sink.apply([earlier]).skipped_stale == 1
        assert self.items(spec) == self.expect({"a": {"id": "a", "v": "later"}})
        # 900 > 12 numerically although "900" > "12" fails as plain text: the token is zero-padded
        sink.apply([change("REMOVE", "a", 1, 1000)])
        assert sink.apply([change("INSERT", "a", 1, 999, v="x")]).skipped_stale == 1
        assert self.items(spec) == {}

    def test_ties_across_a_shard_lineage_go_to_the_child_shard(self, sink: TableWriter, spec: TargetSpec) -> None:
        """After a split, the child shard's record is the later one, whatever the sequence numbers say: Kinesis
        orders them only within a shard."""
        child = ChangeEvent("MODIFY", "t", {"id": "a"}, KEY_TYPES, {"id": "a", "v": "child"}, T0 + 1,
                            Position("shardId-000000000002", "12"))  # fmt: skip
        parent = ChangeEvent("MODIFY", "t", {"id": "a"}, KEY_TYPES, {"id": "a", "v": "parent"}, T0 + 1,
                             Position("shardId-000000000000", "900"))  # fmt: skip
        sink.apply([child])
        assert sink.apply([parent]).skipped_stale == 1  # redelivered late: it changes nothing
        assert self.items(spec) == self.expect({"a": {"id": "a", "v": "child"}})
        sink.apply(
            [ChangeEvent("REMOVE", "t", {"id": "a"}, KEY_TYPES, None, T0 + 1, Position("shardId-000000000003", "5"))]
        )
        assert sink.apply([child]).skipped_stale == 1  # the grandchild's REMOVE stays
        assert self.items(spec) == {}

    @pytest.mark.parametrize("shuffle", [False, True], ids=["delivery-order", "random-order"])
    @pytest.mark.parametrize("seed", [7, 2024])
    def test_corpus_in_random_batches_equals_reference(
        self, sink: TableWriter, spec: TargetSpec, seed: int, shuffle: bool
    ) -> None:
        events = corpus_events(700, seed)
        reference = reference_state(events)
        rng = random.Random(seed)
        if shuffle:
            rng.shuffle(events)
        for result in apply_in_random_batches(sink, events, rng, (1, 2, 5, 17, 60, 150)):
            assert result.dead_letters == []
        key_names = sorted(events[0].key_types)
        assert self.items(spec) == self.expected_items(reference, key_names)

    def test_rejected_row_becomes_dead_letter_and_the_rest_applies(self, sink: TableWriter, spec: TargetSpec) -> None:
        sink.ensure_table(KEY_TYPES)
        bad_key, bad = self.poison(sink, spec)
        batch = [change("INSERT", "good1", 10, 10, v=1), change("INSERT", bad_key, 10, 11, **bad)]
        batch += [change("INSERT", "good2", 10, 12, v=2), change("REMOVE", "gone", 10, 13)]
        before = self.items(spec)
        result = sink.apply(batch)
        (letter,) = result.dead_letters
        assert letter.reason.startswith(f"rejected by {sink.dialect.name}: ")
        assert letter.shard_id == "shardId-0" and letter.sequence_number == "11"
        assert json.loads(letter.raw)["Keys"] == {"id": bad_key}
        assert (result.upserted, result.deleted) == (2, 1)
        after = self.items(spec)
        assert {k: v for k, v in after.items() if k not in before} == self.expect(
            {"good1": {"id": "good1", "v": 1}, "good2": {"id": "good2", "v": 2}}
        )
        assert self.count(sink, DEADLETTERS_SUFFIX) == 1

    def test_key_mismatch_is_a_dead_letter(self, sink: TableWriter, spec: TargetSpec) -> None:
        sink.apply([change("INSERT", "a", 1, 1)])
        odd = ChangeEvent("INSERT", "t", {"other": "x"}, {"other": "S"}, {"other": "x"}, T0, Position("s", "9"))
        result = sink.apply([odd, change("INSERT", "b", 1, 2)])
        assert result.upserted == 1 and "do not match the table key" in result.dead_letters[0].reason

    def test_a_dropped_table_raises_instead_of_dead_lettering(self, sink: TableWriter, spec: TargetSpec) -> None:
        sink.apply([change("INSERT", "a", 1, 1)])
        self.execute(spec, f"DROP TABLE {sink.dialect.relation()}")
        with pytest.raises(Exception) as caught:
            sink.apply([change("INSERT", "b", 2, 2), change("REMOVE", "a", 2, 3)])
        assert not sink.dialect.is_row_error(caught.value)
        assert sink.dialect.is_outage(caught.value)
        assert sink.retries == 7  # retried like an outage, to the policy's 8 attempts
        assert self.count(sink, DEADLETTERS_SUFFIX) == 0

    def test_a_dropped_table_is_waited_for_like_an_outage(
        self, make_sink: Callable[..., TableWriter], spec: TargetSpec
    ) -> None:
        """A missing table is not about a row: the batch waits (retried until retry-timeout) and lands once the
        table is back, nothing dead-lettered."""
        sink = make_sink(retry=RetryPolicy(timeout=120, base_delay=0.05, max_delay=0.5))
        sink.apply([change("INSERT", "a", 1, 1, v=0, nested={"x": 1})])
        self.execute(spec, f"DROP TABLE {sink.dialect.relation()}")
        outcome: list[Any] = []

        def apply() -> None:
            try:
                outcome.append(sink.apply([change("INSERT", "b", 2, 2, v=1, nested={"x": 2})]))
            except BaseException as error:  # reported below, in the test's thread
                outcome.append(error)

        thread = threading.Thread(target=apply)
        thread.start()
        wait_for(lambda: sink.retries > 0 or outcome, 60, "the writer to retry")
        make_sink().ensure_table(KEY_TYPES)  # someone restores the table
        thread.join(timeout=120)
        (result,) = outcome
        assert isinstance(result, ApplyResult), result
        assert (result.upserted, result.dead_letters) == (1, [])
        assert self.items(spec) == self.expect({"b": {"id": "b", "v": 1, "nested": {"x": 2}}})

    @pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
    def test_wide_items_land_at_any_batch_size(self, sink: TableWriter, spec: TargetSpec, batch_size: int) -> None:
        """Items with more attributes than a table may have columns (CrateDB: 1,000) land whole, never a dead
        letter, whatever the batch boundaries (issue 15: at batch-size=2 the batch was retried for ever)."""
        events = wide_events()
        for start in range(0, len(events), batch_size):
            result = sink.apply(coalesce(events[start : start + batch_size]))
            assert result.dead_letters == []
        assert self.count(sink, DEADLETTERS_SUFFIX) == 0
        assert self.items(spec) == self.expect_reference(events)

    # Rounds of racing writers on fresh tables: PostgreSQL's races show in one round of 6 writers in a few (its
    # DuplicateObject, "type ... already exists", in about one in three), so it runs more; DDL is slow on CrateDB.
    ddl_race_rounds = 2

    def test_writers_creating_the_tables_at_once_all_succeed(self, target_url: str) -> None:
        """Several processors or workers create the relay's tables (and PostgreSQL their row types) at the same
        moment: each one succeeds, finding what the others created (issue 15: DuplicateObject stopped a worker)."""
        for _ in range(self.ddl_race_rounds):
            spec = parse_target(target_url, f"t_{uuid.uuid4().hex[:12]}")
            try:
                self.race_creating_tables(spec, writers=6)
            finally:
                self.drop_tables(spec)

    def race_creating_tables(self, spec: TargetSpec, writers: int) -> None:
        retry = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.2)
        sinks = [TableWriter(spec, dialect=self.make_dialect(spec), retry=retry) for _ in range(writers)]
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []
        claims: list[str] = []

        def create(sink: TableWriter, source: str) -> None:
            try:
                sink.executor.connection()  # connected before the start: the statements meet at the server
                barrier.wait(timeout=60)
                claims.append(sink.claim_source_table(source))
                barrier.wait(timeout=60)
                sink.ensure_table(KEY_TYPES)
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=create, args=(sink, f"src{i}")) for i, sink in enumerate(sinks)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert not errors, errors
            assert len(claims) == writers and len(set(claims)) == 1  # one claim won, every writer sees it
            for index, sink in enumerate(sinks):
                assert sink.apply([change("INSERT", f"k{index}", 1, index + 1, v=index)]).upserted == 1
            expected = {f"k{i}": {"id": f"k{i}", "v": i} for i in range(writers)}
            assert self.items(spec) == self.expect(expected)
        finally:
            for sink in sinks:
                sink.close()

    def test_show_table_and_run_sql(self, sink: TableWriter, spec: TargetSpec) -> None:
        sink.apply([change("INSERT", "b", 1, 1, v="x"), change("INSERT", "a", 1, 2, v="y")])
        page = show_table(spec, spec.qualified_table, limit=1)
        mapped = [column.name for column in SUITE_MAPPING.columns] if self.mapped else []
        assert page.columns == ["pk", "data", "aux", "cdc_version", "cdc_order", "cdc_event", *mapped]
        assert (page.total, len(page.rows)) == (2, 1)  # cut at the limit, and it says how many there are
        assert page.rows[0][3] == T0 + 1 and page.rows[0][5] == "INSERT"
        assert "a" in str(page.rows[0][0])  # primary key order
        assert run_sql(spec, "SELECT 1 AS one") == (["one"], [(1,)])

    @pytest.mark.parametrize("batch_size", [1, 3, 50])
    def test_nul_and_the_marker_round_trip_exactly(self, sink: TableWriter, spec: TargetSpec, batch_size: int) -> None:
        """Issue 15: NUL anywhere in an item (values, names, keys) is stored and read back exactly, through the
        reader that verify, the full load's prune and the tests use; never a dead letter, at any batch size."""
        items = nul_items()
        stream = [nul_event("INSERT", item, 1, seq) for seq, item in enumerate(items, start=1)]
        stream += [
            nul_event("MODIFY", items[0], 2, 10, s="\x00changed", ss=["\x00"]),  # modify a NUL-keyed row
            nul_event("REMOVE", items[1], 2, 11),  # remove a row whose key is another's escaped form
            nul_event("REMOVE", items[3], 2, 12),
        ]
        results = [sink.apply(coalesce(stream[at : at + batch_size])) for at in range(0, len(stream), batch_size)]
        assert [letter.reason for result in results for letter in result.dead_letters] == []
        assert self.count(sink, TOMBSTONES_SUFFIX) == 2
        late = [nul_event("INSERT", items[1], 1, 13), nul_event("MODIFY", items[3], 3, 14, v="\x00back")]
        results.append(sink.apply(late))  # the older INSERT meets the tombstone (by key); the newer MODIFY lands
        assert (results[-1].skipped_stale, results[-1].upserted) == (1, 1)
        assert [letter for result in results for letter in result.dead_letters] == []
        stream += late
        final = reference_state(stream)
        assert len(final) == 4
        reader = TargetReader(spec, NUL_KEY_TYPES)
        try:
            rows = list(reader.rows(page_rows=2))  # pages: the keyset cursor passes escaped keys along
            assert {row.key_id: row.item for row in rows} == {
                key_id: comparable(item) for key_id, item in final.items()
            }
            assert all(row.key_id == canonical_key(row.key) and row.key_id in final for row in rows)
            # verify's digests: the source side goes through the dialect's own upsert parameters
            latest = {event.key_id: event for event in stream if event.op != "REMOVE"}
            source = {key_id: digest(reader.stored_item(latest[key_id])) for key_id in final}
            assert {row.key_id: digest(row.item) for row in rows} == source
            by_key = reader.rows_by_keys([row.key for row in rows] + [nul_event("REMOVE", items[1], 0, 0).key])
            assert {key_id: digest(row.item) for key_id, row in by_key.items()} == source
            # the full load's prune reads keys and removes them by key
            older = [key for page in reader.keys_older_than(T0 + 100) for key in page]  # pages of keys
            assert sorted(canonical_key(key) for key in older) == sorted(final)
            removes = [
                ChangeEvent("REMOVE", "t", key, dict(NUL_KEY_TYPES), None, T0 + 50, Position("s", "1")) for key in older
            ]
            assert sink.apply(removes).deleted == 4
            assert reader.count() == 0
        finally:
            reader.close()

    def test_show_table_prints_nul_items_exactly(self, sink: TableWriter, spec: TargetSpec, target_url: str) -> None:
        from click.testing import CliRunner

        from kcl_relay.cli import cli

        item = nul_items()[0]
        assert sink.apply([nul_event("INSERT", item, 1, 1)]).dead_letters == []
        shown = CliRunner().invoke(cli, ["show", "table", spec.qualified_table, "--target", target_url])
        assert shown.exit_code == 0, shown.output
        (line,) = [line for line in shown.stdout.splitlines() if line.startswith("{")]
        printed = json.loads(line)
        printed.pop("_cdc")
        assert comparable(printed) == comparable(item)

    def test_dead_letter_stores_decode_failures(self, sink: TableWriter) -> None:
        sink.dead_letter([DeadLetter("{not json", "not JSON: Expecting value", "shardId-7", "42")])  # before any table
        sink.dead_letter([DeadLetter("x" * 40_000, "too long to index", None, None)])
        assert self.count(sink, DEADLETTERS_SUFFIX) == 2

    def test_tombstone_purge(self, make_sink: Callable[..., TableWriter], clock: Clock) -> None:
        sink = make_sink(purge_interval=timedelta(days=365))
        tombstones = sink.dialect.relation(TOMBSTONES_SUFFIX)
        sink.apply([change("REMOVE", "a", 1, 1), change("REMOVE", "b", 1, 2)])
        clock.now += timedelta(hours=23)
        self.refresh(sink.spec, tombstones)  # hours passed: CrateDB refreshed long ago (purging is a query)
        sink.purge_tombstones()
        assert self.count(sink, TOMBSTONES_SUFFIX) == 2  # the default retention is 24 h
        sink.apply([change("REMOVE", "c", 2, 3)])
        clock.now += timedelta(hours=2)
        self.refresh(sink.spec, tombstones)
        sink.purge_tombstones()
        assert self.count(sink, TOMBSTONES_SUFFIX) == 1
        short = make_sink(tombstone_retention=timedelta(minutes=1))
        clock.now += timedelta(minutes=2)
        self.refresh(sink.spec, tombstones)
        short.apply([change("INSERT", "d", 3, 4)])  # the first apply purges; then at most every purge_interval
        assert self.count(sink, TOMBSTONES_SUFFIX) == 0

    @staticmethod
    def statements_of_a_mixed_batch(sink: TableWriter) -> int:
        """The statements `sink` takes for one batch of 500 MODIFYs and 500 REMOVEs of 1,000 rows there."""
        sink.apply([change("INSERT", f"k{i}", 1, i, n=i) for i in range(1000)])
        before = sink.statements
        batch = [change("MODIFY", f"k{i}", 2, 1000 + i, n=-i) for i in range(500)]
        batch += [change("REMOVE", f"k{i}", 2, 1000 + i) for i in range(500, 1000)]
        result = sink.apply(batch)
        assert (result.upserted, result.deleted) == (500, 500)
        return sink.statements - before

    def test_a_batch_is_a_handful_of_statements(self, sink: TableWriter) -> None:
        statements = self.statements_of_a_mixed_batch(sink)
        # Never one statement per event: a few bulk writes, plus reads by key in the dialect's chunks (at most
        # three read rounds per kind of event: tombstones, row states, the re-check without transactions).
        reads = 3 * 2 * math.ceil(500 / sink.dialect.keys_per_read(["id"]))
        assert statements <= 12 + reads, statements

    def test_concurrent_workers_converge(self, make_sink: Callable[..., TableWriter], spec: TargetSpec) -> None:
        events = corpus_events(500, 99)
        reference = reference_state(events)
        rng = random.Random(99)
        shares = share_out(events, rng, (1, 1, 1, 2))  # mostly to one worker
        sinks = [make_sink(), make_sink()]
        sinks[0].ensure_table(events[0].key_types)

        def work(sink: TableWriter, share: list[ChangeEvent]) -> None:
            for start in range(0, len(share), 25):
                sink.apply(coalesce(share[start : start + 25]))

        run_at_once([functools.partial(work, *pair) for pair in zip(sinks, shares, strict=True)], timeout=120)
        assert self.items(spec) == self.expected_items(reference, sorted(events[0].key_types))

    def expect_reference(self, events: Sequence[ChangeEvent]) -> dict[Hashable, Item]:
        return self.expected_items(reference_state(events), sorted(events[0].key_types))

    @pytest.mark.parametrize(
        ("schema", "batch_size", "events"),
        [
            *[(name, 1, 40) for name in KEY_SCHEMAS],
            ("S", 37, 600),
            ("S+N", 37, 600),
            ("N+B", 250, 1500),
            ("B+S", 250, 1500),
            ("B", 1000, 3000),
            ("S", 5000, 6000),
            ("N", 5000, 6000),
            ("S+N", 5000, 6000),
        ],
    )
    def test_consecutive_batches_equal_reference(
        self, sink: TableWriter, spec: TargetSpec, schema: str, batch_size: int, events: int
    ) -> None:
        """Batches applied back to back, no pause: every key's newest event is what the table holds."""
        stream = history(KEY_SCHEMAS[schema], keys=max(events // 3, 5), events=events, seed=batch_size)
        for start in range(0, len(stream), batch_size):
            assert sink.apply(coalesce(stream[start : start + batch_size])).dead_letters == []
        assert self.items(spec) == self.expect_reference(stream)

    @pytest.mark.parametrize("schema", KEY_SCHEMAS)
    def test_insert_then_remove_in_consecutive_batches(self, sink: TableWriter, spec: TargetSpec, schema: str) -> None:
        """Items removed right after they were written leave nothing behind (more keys than one read names)."""
        key_types = KEY_SCHEMAS[schema]
        inserts = [keyed(key_types, n, "INSERT", 1, n + 1, v=n) for n in range(1200)]
        removes = [keyed(key_types, n, "REMOVE", 2, 2000 + n) for n in range(1200)]
        assert sink.apply(inserts).upserted == 1200
        assert sink.apply(removes).deleted == 1200
        assert self.items(spec) == {}
        again = [keyed(key_types, n, "INSERT", 3, 4000 + n, v=-n) for n in range(0, 1200, 2)]
        assert sink.apply(again).upserted == 600
        assert self.items(spec) == self.expect_reference([*inserts, *removes, *again])

    @pytest.mark.parametrize("schema", ["S", "S+N", "N+B"])
    def test_remove_then_late_insert_in_consecutive_batches(
        self, sink: TableWriter, spec: TargetSpec, schema: str
    ) -> None:
        """A REMOVE, and right after it older writes of the same items (late, redelivered): none comes back."""
        key_types = KEY_SCHEMAS[schema]
        first = [keyed(key_types, n, "INSERT", 1, n + 1, v=1) for n in range(800)]
        removes = [keyed(key_types, n, "REMOVE", 5, 1000 + n) for n in range(800)]
        late = [keyed(key_types, n, "MODIFY", 3, 2000 + n, v=3) for n in range(800)]
        sink.apply(first)
        sink.apply(removes)
        result = sink.apply(late)
        assert (result.upserted, result.skipped_stale) == (0, 800)
        assert self.items(spec) == {}
        assert self.count(sink, TOMBSTONES_SUFFIX) == 800

    def race_two_writers(
        self, sinks: Sequence[TableWriter], spec: TargetSpec, stream: Sequence[ChangeEvent], seed: int
    ) -> None:
        """The two writers apply the stream at once, each event reaching one or both of them, in small random
        batches: the table ends with every key's newest event."""
        shares = share_out(stream, random.Random(seed), (1, 2))
        sinks[0].ensure_table(stream[0].key_types)
        run_at_once(
            [
                functools.partial(
                    list, apply_in_random_batches(sink, share, random.Random(seed * 10 + index), (1, 3, 8, 20))
                )
                for index, (sink, share) in enumerate(zip(sinks, shares, strict=True))
            ],
            timeout=300,
        )
        assert self.items(spec) == self.expect_reference(stream)

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_two_writers_race_on_one_key_set(
        self, make_sink: Callable[..., TableWriter], spec: TargetSpec, seed: int
    ) -> None:
        """Two writers apply the same few hot keys at once, each event reaching one or both of them, in small
        batches: without transactions (CrateDB) too, the table ends with every key's newest event."""
        stream = history(KEY_SCHEMAS["S+N"], keys=25, events=1500, seed=seed)
        self.race_two_writers([make_sink(), make_sink()], spec, stream, seed)

    # ---- delete-mode=soft: a REMOVE keeps the row, flagged in cdc_event with its version ----
    def stored_rows(self, spec: TargetSpec) -> dict[str, tuple[int, str]]:
        """Every row of the target as key_id -> (cdc_version, cdc_event), soft-removed ones too."""
        reader = TargetReader(spec, KEY_TYPES)
        relation = reader.relation
        self.refresh(spec, relation)
        pk = "pk::text" if spec.dialect == "postgresql" else "pk"
        _, rows = run_sql(spec, f"SELECT {pk}, cdc_version, cdc_event FROM {relation}")
        reader.close()
        out = {}
        for key, version, op in rows:
            key = json.loads(key) if isinstance(key, str) else key
            out[canonical_key({"id": key["id"]})] = (int(version) - T0, str(op))
        return out

    def test_soft_remove_keeps_the_row_flagged_and_newest_wins(
        self, make_sink: Callable[..., TableWriter], spec: TargetSpec
    ) -> None:
        sink = make_sink(delete_mode="soft")
        assert sink.apply([change("INSERT", "a", 1, 1, x=1), change("INSERT", "b", 1, 2, y=1)]).upserted == 2
        result = sink.apply([change("REMOVE", "a", 2, 3), change("REMOVE", "never", 2, 4), change("MODIFY", "b", 2, 5)])
        assert (result.upserted, result.deleted, result.skipped_stale) == (1, 2, 0)
        late = sink.apply([change("MODIFY", "a", 1, 6, x=9), change("REMOVE", "b", 1, 7)])  # older than the rows
        assert (late.upserted, late.deleted, late.skipped_stale) == (0, 0, 2)
        assert self.items(spec) == self.expect({"b": {"id": "b"}})
        rows = self.stored_rows(spec)
        assert rows == {'{"id":"a"}': (2, "REMOVE"), '{"id":"b"}': (2, "MODIFY"), '{"id":"never"}': (2, "REMOVE")}
        assert self.count(sink, TOMBSTONES_SUFFIX) == 0  # nothing beside the rows
        relation = sink.dialect.relation()
        self.refresh(spec, relation)
        data = "data::text" if spec.dialect == "postgresql" else "data"
        _, kept = run_sql(spec, f"SELECT {data} FROM {relation} WHERE cdc_event = 'REMOVE'")
        kept_data = sorted(json.dumps(d if not isinstance(d, str) else json.loads(d)) for (d,) in kept)
        # The removed row keeps its data (mapped: x is in its own column, kept alike); a REMOVE of no row has none.
        assert kept_data == (["{}", "{}"] if self.mapped else sorted(["{}", '{"x": 1}']))
        assert sink.apply([change("INSERT", "a", 3, 8, x=3)]).upserted == 1  # a newer INSERT brings it back
        assert self.items(spec) == self.expect({"a": {"id": "a", "x": 3}, "b": {"id": "b"}})
        reader = TargetReader(spec, KEY_TYPES)
        try:  # what verify and the full load's prune read: soft-removed rows are not items
            assert reader.count() == 2
            assert sorted(row.key_id for row in reader.rows()) == ['{"id":"a"}', '{"id":"b"}']
            assert list(reader.rows_by_keys([{"id": "never"}])) == []
            assert [key for page in reader.keys_older_than(T0 + 10) for key in page] == [{"id": "a"}, {"id": "b"}]
        finally:
            reader.close()

    def test_a_table_keeps_its_delete_mode(self, make_sink: Callable[..., TableWriter], spec: TargetSpec) -> None:
        make_sink(delete_mode="soft").apply([change("REMOVE", "a", 1, 1)])
        with pytest.raises(ValueError, match="delete-mode=soft, not hard"):
            make_sink(delete_mode="hard").apply([change("INSERT", "a", 2, 2)])
        redrive_like = make_sink(delete_mode=None)  # no mode given: the table's
        assert redrive_like.apply([change("REMOVE", "b", 1, 3)]).deleted == 1
        assert redrive_like.soft

    @pytest.mark.parametrize("seed", [7, 2024])
    def test_soft_corpus_in_random_batches_equals_reference(
        self, make_sink: Callable[..., TableWriter], spec: TargetSpec, seed: int
    ) -> None:
        sink = make_sink(delete_mode="soft")
        events = corpus_events(600, seed)
        rng = random.Random(seed)
        rng.shuffle(events)
        for result in apply_in_random_batches(sink, events, rng, (1, 7, 50, 200)):
            assert result.dead_letters == []
        assert self.items(spec) == self.expect_reference(events)

    def test_soft_a_batch_is_one_write(self, make_sink: Callable[..., TableWriter]) -> None:
        sink = make_sink(delete_mode="soft")
        statements = self.statements_of_a_mixed_batch(sink)
        # No reads: one guarded bulk upsert where the bulk answers per row (CrateDB), else one per kind of event
        # (plus PostgreSQL's savepoint around each).
        assert statements <= (1 if not sink.dialect.features.transactions else 6), statements

    @pytest.mark.parametrize("seed", [1, 2])
    def test_soft_two_writers_race_on_one_key_set(
        self, make_sink: Callable[..., TableWriter], spec: TargetSpec, seed: int
    ) -> None:
        stream = history(KEY_SCHEMAS["S"], keys=25, events=1000, seed=seed)
        self.race_two_writers([make_sink(delete_mode="soft"), make_sink(delete_mode="soft")], spec, stream, seed)
