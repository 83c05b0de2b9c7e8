"""partition-by on the real CrateDB: a month-partitioned table whose partition column is generated from the sort key
(an epoch-ms number), relayed out of order with REMOVEs, ends exact; the relay's reads stay real-time Gets; a month
goes with one DELETE on the partition column, which CrateDB runs by dropping the partition, and the rest stays.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.event import ChangeEvent, KeyType, Op, Position
from kcl_relay.mapping.spec import MappingError, parse_mapping
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter, dialect_for
from tests.support.reference import reference_state
from tests.support.sink_suite import T0
from tests.support.tables import reader_items

pytestmark = pytest.mark.cratedb

KEYS: dict[str, KeyType] = {"device": "S", "at": "N"}
# refresh-interval: long, so that only real-time Gets see what the relay wrote a moment ago.
MAPPING = """
[columns]
at_time = { path = "at", type = "TIMESTAMP", from = "epoch-ms" }
reading = { path = "reading", type = "DOUBLE" }
[table]
partition-by = "month(at_time)"
refresh-interval = 600
"""
MONTHS = [datetime(2025, month, 1, tzinfo=timezone.utc) for month in (1, 2, 3)]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _event(n: int, op: Op, seq: int, **attributes: Any) -> ChangeEvent:
    key = {"device": f"d{n % 4}", "at": _ms(MONTHS[n % 3]) + n * 3_600_000}  # one sort key per n, in its month
    image = None if op == "REMOVE" else {**key, **attributes}
    return ChangeEvent(op, "t", key, dict(KEYS), image, T0 + seq * 10, Position("shardId-000000000000", str(seq)))


def _history(keys: int, events: int, seed: int) -> list[ChangeEvent]:
    rng = random.Random(seed)
    present: set[int] = set()
    out = []
    for seq in range(1, events + 1):
        n = rng.randrange(keys)
        op: Op = rng.choice(("MODIFY", "REMOVE")) if n in present else rng.choice(("INSERT", "INSERT", "REMOVE"))
        (present.discard if op == "REMOVE" else present.add)(n)
        out.append(_event(n, op, seq, reading=seq / 4, note=f"n{seq}"))
    return out


@pytest.fixture
def spec(cratedb_url: str) -> Iterator[TargetSpec]:
    spec = parse_target(cratedb_url, f"part_{uuid.uuid4().hex[:12]}")
    yield spec
    dialect = dialect_for(spec)
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        run_sql(spec, f"DROP TABLE IF EXISTS {dialect.relation(suffix)}")


def _items(spec: TargetSpec) -> dict[str, Any]:
    return reader_items(spec, KEYS)


def _explain(spec: TargetSpec, sql: str, params: list[Any]) -> str:
    from crate import client

    connection = client.connect(f"http://{spec.url.host}:{spec.url.port}", username=spec.url.username)
    try:
        cursor = connection.cursor()
        cursor.execute(f"EXPLAIN {sql}", params)
        return str(cursor.fetchall()[0][0])
    finally:
        connection.close()


def _partitions(spec: TargetSpec) -> list[int]:
    rows = run_sql(
        spec,
        "SELECT values['at_time_month'] FROM information_schema.table_partitions "
        f"WHERE table_schema = '{spec.schema}' AND table_name = '{spec.table}'",
    )[1]
    return sorted(int(row[0]) for row in rows)


def test_a_month_partitioned_table_relays_exact_and_a_month_goes_with_one_delete(spec: TargetSpec) -> None:
    events = _history(keys=36, events=400, seed=19)
    reference = reference_state(events)
    rng = random.Random(19)
    rng.shuffle(events)  # out of order: late older writes, REMOVEs before their INSERTs
    sink = TableWriter(spec, mapping=parse_mapping(MAPPING).default)
    try:
        start = 0
        while start < len(events):
            size = rng.choice((1, 3, 10, 40))
            assert sink.apply(coalesce(events[start : start + size])).dead_letters == []
            start += size
        # The relay's reads of a partitioned table: still Gets, the partition column derived from the key.
        names = sorted(KEYS)
        count = sink.dialect.keys_per_read(names)
        keys = [sink.dialect.key_params(event) for event in events[:count]]
        state = sink.dialect.state_sql(names, count)
        plan = _explain(spec, state, [value for key in keys for value in key])
        assert plan.startswith("Get[") and plan.count("date_trunc('month'") >= count, plan
    finally:
        sink.close()
    assert reference and len({event.key["at"] for event in events}) == 36
    expected = {key_id: item for key_id, item in reference.items()}
    run_sql(spec, f"REFRESH TABLE {dialect_for(spec).relation()}")
    assert _items(spec) == expected
    months = [_ms(moment) for moment in MONTHS]
    assert _partitions(spec) == months  # every month has rows left in this history

    relation = dialect_for(spec).relation()
    run_sql(spec, f"DELETE FROM {relation} WHERE at_time_month = '2025-02-01'")  # as docs/type-mapping.md has it
    run_sql(spec, f"REFRESH TABLE {relation}")
    assert _partitions(spec) == [months[0], months[2]]  # the partition is gone, not emptied
    kept = {key_id: item for key_id, item in expected.items() if not months[1] <= item["at"] < months[2]}
    assert len(kept) < len(expected) and _items(spec) == kept


def test_partition_by_of_a_non_key_attribute_or_on_a_table_without_it_is_refused(spec: TargetSpec) -> None:
    non_key = MAPPING.replace('path = "at"', 'path = "takenAt"')
    sink = TableWriter(spec, mapping=parse_mapping(non_key).default)
    try:
        with pytest.raises(MappingError, match=r"at_time maps takenAt, not a key attribute \(at, device\)"):
            sink.ensure_table(KEYS)
    finally:
        sink.close()
    plain = TableWriter(spec)  # a table the relay made without partition-by
    try:
        plain.apply([_event(1, "INSERT", 1, reading=1.0)])
    finally:
        plain.close()
    sink = TableWriter(spec, mapping=parse_mapping(MAPPING).default)
    try:
        with pytest.raises(MappingError, match="has no partition column at_time_month: partition-by is set when"):
            sink.ensure_table(KEYS)
    finally:
        sink.close()


def test_a_key_the_partition_column_cannot_read_is_a_dead_letter_and_the_rest_applies(spec: TargetSpec) -> None:
    from decimal import Decimal

    good = _event(1, "INSERT", 1, reading=1.0)
    key = {"device": "d9", "at": Decimal("1.5")}  # no epoch milliseconds: CAST(pk['at'] AS BIGINT) fails
    bad = ChangeEvent("INSERT", "t", key, dict(KEYS), {**key, "reading": 2.0}, T0 + 20, Position("shardId-0", "2"))
    sink = TableWriter(spec, mapping=parse_mapping(MAPPING).default)
    try:
        result = sink.apply([good, bad])
    finally:
        sink.close()
    (letter,) = result.dead_letters
    assert "Cannot cast value `1.5` to type `bigint`" in letter.reason, letter.reason
    later = _event(1, "MODIFY", 3, reading=3.0)
    plain = TableWriter(spec)  # no mapping= given: the table's own, kept beside it, names the partition column
    try:
        assert plain.apply([later]).upserted == 1
    finally:
        plain.close()
    run_sql(spec, f"REFRESH TABLE {dialect_for(spec).relation()}")
    assert list(_items(spec).values()) == [later.image]
