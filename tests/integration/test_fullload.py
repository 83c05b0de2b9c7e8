"""The full load and verify against the emulated DynamoDB and each real database (CrateDB, PostgreSQL, SQLite).

The stream side is read here without the KCL (tests/support/stream_follower.py: one pipeline per shard, from the
full load's start time on); tests/e2e/test_fullload_e2e.py runs the same through the real KCL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kcl_relay import fullload
from kcl_relay.cdc.event import SNAPSHOT_SHARD, ChangeEvent, Item, KeyType, Position, canonical_key
from kcl_relay.cdc.jsonenc import loads
from kcl_relay.cdc.values import from_item
from kcl_relay.localaws.pump import PumpClients, StreamPump
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table, fill_table, scan_items, write_until
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.reader import TargetReader
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter, open_sink
from kcl_relay.source import dynamodb
from kcl_relay.source.table_url import TableSpec, parse_table
from kcl_relay.verify import VerifyOptions, compare
from tests.support.cleanup import drop_target_tables
from tests.support.stream_follower import StreamFollower
from tests.support.tables import WORKLOAD_COLUMNS, read_items, same_value

pytestmark = pytest.mark.timeout(300)

KEY_SCHEMA = (("tenant", "S"), ("id", "N"))
KEY_TYPES: dict[str, KeyType] = dict(KEY_SCHEMA)  # type: ignore[arg-type]
N_KEYS = 300
NOW = int(time.time() * 1_000_000)
# Values each database stores in its own way: CrateDB keeps numbers a double cannot hold as text in aux, and an
# attribute whose type clashes with the one its column got first goes to aux as well.
SPECIAL_ITEMS = [
    {"tenant": {"S": "special"}, "id": {"N": "1"}, "n": {"N": "1"}, "pi": {"N": "3.14159265358979323846264338327"}},
    {"tenant": {"S": "special"}, "id": {"N": "2"}, "n": {"S": "text where a number was"}, "tiny": {"N": "1E-130"}},
    {"tenant": {"S": "special"}, "id": {"N": "3.5"}, "big": {"N": "-99999999999999999999999999999999999999"}},
    {"tenant": {"S": "ключ 🔑"}, "id": {"N": "-12345678901234567890123456789"}, "empty": {"S": ""}},
    {"tenant": {"S": "special"}, "id": {"N": "4"}, "half": {"N": "0.5"}, "two": {"N": "2.0"}, "l": {"L": []}},
]


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAws]:
    with LocalAws(log_path=tmp_path_factory.mktemp("localaws") / "moto.log") as emulators:
        yield emulators


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def target_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def target(target_url: str) -> Iterator[TargetSpec]:
    spec = parse_target(target_url, f"t_{uuid.uuid4().hex[:10]}")
    yield spec
    drop_target_tables(spec)


@dataclass
class Table:
    aws: LocalAws
    name: str
    stream: str
    pump: StreamPump

    def spec(self, **options: str) -> TableSpec:
        host = self.aws.endpoint_url.removeprefix("http://")
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return parse_table(f"dynamodb://test:test@{host}/{self.name}" + (f"?{query}" if query else ""))

    def oracle(self) -> dict[str, Item]:
        items = {}
        for raw in scan_items(self.aws.client("dynamodb"), self.name).values():
            item = from_item(raw)
            items[canonical_key({name: item[name] for name, _ in KEY_SCHEMA})] = item
        return items


def new_table(aws: LocalAws, items: int = N_KEYS // 2) -> Table:
    """A table holding data (all DynamoDB types, SPECIAL_ITEMS too), with a stream that starts empty."""
    suffix = uuid.uuid4().hex[:8]
    name, stream = f"items-{suffix}", f"items-cdc-{suffix}"
    ddb, kinesis = aws.client("dynamodb"), aws.client("kinesis")
    create_table(ddb, name, KEY_SCHEMA)
    fill_table(ddb, name, items, seed=5)
    for item in SPECIAL_ITEMS:
        ddb.put_item(TableName=name, Item=item)
    create_stream(kinesis, stream, shards=2)
    create_stream(kinesis, f"{stream}-before", shards=1)
    clients = PumpClients.for_endpoint(aws.endpoint_url)
    before = StreamPump(clients, name, f"{stream}-before")  # the history before the stream existed
    before.pump_available()
    return Table(aws, name, stream, StreamPump(clients, name, stream, state=before.state))


def assert_target_equals(table: Table, target: TargetSpec) -> None:
    oracle = table.oracle()
    got = read_items(target, KEY_TYPES)
    assert sorted(got) == sorted(oracle)
    differing = [key for key, item in oracle.items() if not same_value(item, got[key])]
    assert not differing, f"{len(differing)} rows differ, e.g. {differing[:3]}"


def snapshot_of(spec: TableSpec, target: TargetSpec) -> fullload.Snapshot:
    ddb = dynamodb.client(spec)
    clock = dynamodb.AwsClock()
    info = dynamodb.describe(spec, ddb, clock)
    fullload.prepare_target(target, info)
    return fullload.Snapshot(spec, target, ddb, info, clock)


def no_drift(spec: TableSpec, target: TargetSpec, **options: Any) -> None:
    report, _ = compare(spec, target, VerifyOptions(settle=0, **options))
    assert report.in_sync, report.lines(spec.table, target.describe(), 5)


# ---- the full load next to the stream ------------------------------------------------------------------------


class SlowScans:
    """A DynamoDB client whose Scan pages take a while, as on a big table: the writers surely write during it."""

    def __init__(self, client: Any, delay: float) -> None:
        self.client, self.delay = client, delay

    def scan(self, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return self.client.scan(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_full_load_and_stream_converge_while_writers_change_the_table(aws: LocalAws, target: TargetSpec) -> None:
    table = new_table(aws)
    spec = table.spec(segments="4", **{"page-size": "7", "batch-size": "50"})
    snapshot = snapshot_of(spec, target)
    snapshot.ddb = SlowScans(snapshot.ddb, delay=0.1)
    start = fullload.stream_start(snapshot.clock)  # before the scan, as the relay takes it

    write_times: list[float] = []
    stop_writers, stop_pump, stop_follower = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        on_write = lambda: write_times.append(time.monotonic())  # noqa: E731
        write_until(aws.client("dynamodb"), table.name, stop_writers, seed=100, n_keys=N_KEYS, on_write=on_write)

    follower = StreamFollower(aws.client("kinesis"), table.stream, start, target, table.name)
    threads = [
        threading.Thread(target=write, daemon=True),
        threading.Thread(target=table.pump.follow, args=(stop_pump, 0.05), daemon=True),
        threading.Thread(target=follower.follow, args=(stop_follower,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # writes before the scan, too
    scan_began = time.monotonic()
    snapshot.run(threading.Event())
    scan_ended = time.monotonic()
    time.sleep(0.5)  # ... and after it
    stop_writers.set()
    threads[0].join()
    stop_pump.set()
    threads[1].join()
    table.pump.pump_available()
    stop_follower.set()
    threads[2].join()
    follower.close()

    assert follower.failure is None, follower.failure
    assert snapshot.complete and snapshot.stats.dead_letters == 0
    during = sum(scan_began < moment < scan_ended for moment in write_times)
    assert during >= 10, f"only {during} writes during the {scan_ended - scan_began:.1f} s scan"
    assert follower.applied > 0
    assert_target_equals(table, target)
    no_drift(spec, target)


def test_verify_names_missing_extra_and_differing_keys(aws: LocalAws, target: TargetSpec) -> None:
    table = new_table(aws, items=40)
    spec = table.spec(segments="2")
    snapshot = snapshot_of(spec, target)
    snapshot.run(threading.Event())
    no_drift(spec, target)
    no_drift(spec, target, sample=1.0)

    changed, removed = sorted(table.oracle())[:2]
    later = NOW + 3_600_000_000
    changed_key, removed_key = loads(changed), loads(removed)
    sink = open_sink(target)
    try:
        sink.apply(
            [
                ChangeEvent("MODIFY", table.name, changed_key, KEY_TYPES, {**changed_key, "x": 1}, later, at(1)),
                ChangeEvent("REMOVE", table.name, removed_key, KEY_TYPES, None, later, at(2)),
                ChangeEvent(
                    "INSERT",
                    table.name,
                    {"tenant": "extra", "id": 9},
                    KEY_TYPES,
                    {"tenant": "extra", "id": 9},
                    later,
                    at(3),
                ),
            ]
        )
    finally:
        sink.close()
    extra = canonical_key({"tenant": "extra", "id": 9})
    for options in ({}, {"sample": 1.0}):
        report, _ = compare(spec, target, VerifyOptions(settle=0, **options))
        assert (report.missing, report.extra, report.differing) == ([removed], [extra], [changed]), options
        assert not report.in_sync
    report, _ = compare(spec, target, VerifyOptions(settle=0))
    assert (report.dynamodb_items, report.target_rows) == (len(table.oracle()), len(table.oracle()))
    assert report.lines(table.name, "the target", 1)[-1] == "drift: 3 keys"


def test_verify_looks_again_before_calling_it_drift(aws: LocalAws, target: TargetSpec) -> None:
    """A difference that the relay repairs while verify waits (--settle) is no drift."""
    table = new_table(aws, items=20)
    spec = table.spec()
    snapshot_of(spec, target).run(threading.Event())
    ddb = aws.client("dynamodb")
    ddb.put_item(TableName=table.name, Item={"tenant": {"S": "late"}, "id": {"N": "1"}})
    repair = threading.Timer(0.5, lambda: snapshot_of(spec, target).run(threading.Event()))
    repair.start()
    try:
        report, _ = compare(spec, target, VerifyOptions(settle=2.0))
    finally:
        repair.join()
    assert report.in_sync, report.lines(table.name, "target", 5)
    ddb.put_item(TableName=table.name, Item={"tenant": {"S": "late"}, "id": {"N": "2"}})
    report, _ = compare(spec, target, VerifyOptions(settle=0.2))
    assert report.missing == [canonical_key({"tenant": "late", "id": 2})]


def test_verify_of_a_missing_target_table_is_drift(aws: LocalAws, target: TargetSpec) -> None:
    table = new_table(aws, items=5)
    report, _ = compare(table.spec(), target, VerifyOptions(settle=0))
    assert not report.in_sync and report.target_rows == 0
    assert len(report.missing) == len(table.oracle())


def test_the_target_is_read_in_key_order_a_page_at_a_time(aws: LocalAws, target: TargetSpec) -> None:
    table = new_table(aws, items=40)
    snapshot_of(table.spec(), target).run(threading.Event())
    reader = TargetReader(target, KEY_TYPES)
    try:
        whole = [row.key_id for row in reader.rows()]
        paged = [row.key_id for row in reader.rows(page_rows=3)]
        by_key = reader.rows_by_keys([loads(key) for key in whole[:5]])
        sample = reader.sample(7)
    finally:
        reader.close()
    assert sorted(whole) == sorted(table.oracle())
    assert paged == whole, "each row exactly once, in the same order"
    assert sorted(by_key) == sorted(whole[:5])
    assert len(sample) == 7 and {row.key_id for row in sample} <= set(whole)


def test_verify_pages_through_more_items_than_a_page(
    aws: LocalAws, target: TargetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 4 target rows and chunks of 3 stored digests over keys with odd characters: every key counted once,
    the missing, extra and differing ones named exactly, no target read fetching more than a page."""
    from kcl_relay import verify

    table = new_table(aws, items=12)
    ddb = aws.client("dynamodb")
    tenants = ["a'b", 'q"d', "back\\slash", "%_", "🔑", "\ue000", "\uffff", " "]
    for n, tenant in enumerate(tenants):
        for number in ("0", "-1.5", "99999999999999999999999999999999999999"):
            ddb.put_item(TableName=table.name, Item={"tenant": {"S": tenant}, "id": {"N": number}, "n": {"N": str(n)}})
    spec = table.spec(segments="3")
    snapshot_of(spec, target).run(threading.Event())
    monkeypatch.setattr(verify, "PAGE_ROWS", 4)
    monkeypatch.setattr(verify._Digests, "CHUNK", 3)
    selects: list[int] = []
    real_query = TargetReader._query

    def counted(reader: TargetReader, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        rows = real_query(reader, sql, params)
        if " LIMIT " in sql:
            selects.append(len(rows))
        return rows

    monkeypatch.setattr(TargetReader, "_query", counted)
    report, _ = compare(spec, target, VerifyOptions(settle=0))
    oracle = table.oracle()
    assert report.in_sync and report.target_rows == report.dynamodb_items == len(oracle) > 4 * 10
    assert max(selects) == 4 and len(selects) >= len(oracle) // 4

    keys = sorted(oracle, key=lambda key: ("🔑" not in key and "\ue000" not in key, key))
    removed, changed = keys[:3], keys[3:6]
    extra_keys = [{"tenant": "\uffff" + tenant, "id": 7} for tenant in tenants[:4]]
    later = NOW + 3_600_000_000
    sink = open_sink(target)
    try:
        events = [ChangeEvent("REMOVE", table.name, loads(key), KEY_TYPES, None, later, at(1)) for key in removed]
        events += [
            ChangeEvent("MODIFY", table.name, loads(key), KEY_TYPES, {**loads(key), "x": 1}, later, at(2))
            for key in changed
        ]
        events += [ChangeEvent("INSERT", table.name, key, KEY_TYPES, dict(key), later, at(3)) for key in extra_keys]
        sink.apply(events)
    finally:
        sink.close()
    for options in ({}, {"sample": 1.0}):
        report, _ = compare(spec, target, VerifyOptions(settle=0, **options))
        assert sorted(report.missing) == sorted(removed), options
        assert sorted(report.differing) == sorted(changed), options
        assert sorted(report.extra) == sorted(canonical_key(key) for key in extra_keys), options


# ---- a full load over an older copy --------------------------------------------------------------------------


def at(sequence: int) -> Position:
    return Position("shardId-000000000000", str(sequence))


def test_a_full_load_over_an_older_copy_prunes_what_is_gone(aws: LocalAws, target: TargetSpec) -> None:
    table = new_table(aws, items=30)
    existing = loads(sorted(table.oracle())[0])
    gone = {"tenant": "gone", "id": 1}
    future = {"tenant": "future", "id": 1}
    old = NOW - 86_400_000_000
    sink = open_sink(target)
    sink.ensure_table(KEY_TYPES)
    sink.claim_source_table(table.name)
    sink.apply(
        [
            ChangeEvent("INSERT", table.name, gone, KEY_TYPES, {**gone, "stale": True}, old, at(1)),
            ChangeEvent("INSERT", table.name, existing, KEY_TYPES, {**existing, "stale": True}, old, at(2)),
            # A change newer than the load (as the stream would bring it): the prune leaves it alone.
            ChangeEvent("INSERT", table.name, future, KEY_TYPES, dict(future), NOW + 3_600_000_000, at(3)),
        ]
    )
    spec = table.spec()
    snapshot = snapshot_of(spec, target)
    snapshot.run(threading.Event())
    assert snapshot.complete and snapshot.stats.pruned == 1

    got = read_items(target, KEY_TYPES)
    assert canonical_key(gone) not in got
    assert canonical_key(future) in got
    assert "stale" not in got[canonical_key(existing)]
    # The prune leaves a tombstone: a late, older change of the pruned key cannot bring it back.
    late = ChangeEvent("MODIFY", table.name, gone, KEY_TYPES, dict(gone), old + 1, at(4))
    assert sink.apply([late]).upserted == 0
    sink.close()
    got = read_items(target, KEY_TYPES)
    assert canonical_key(gone) not in got
    del got[canonical_key(future)]
    oracle = table.oracle()
    assert sorted(got) == sorted(oracle)

    report, _ = compare(spec, target, VerifyOptions(settle=0))
    summary = report.lines(table.name, target.describe(), 5)
    assert report.extra == [canonical_key(future)] and not report.missing and not report.differing, summary


def test_prune_false_keeps_rows_the_scan_did_not_find(aws: LocalAws, target: TargetSpec) -> None:
    table = new_table(aws, items=5)
    gone = {"tenant": "gone", "id": 1}
    sink = open_sink(target)
    sink.apply([ChangeEvent("INSERT", table.name, gone, KEY_TYPES, dict(gone), NOW - 10**9, at(1))])
    sink.close()
    snapshot = snapshot_of(table.spec(prune="false"), target)
    snapshot.run(threading.Event())
    assert snapshot.complete
    assert canonical_key(gone) in read_items(target, KEY_TYPES)


# ---- snapshot items against stream events, in the sink -------------------------------------------------------


def snap(ident: str, version: int, n: int, **attributes: Any) -> ChangeEvent:
    key = {"tenant": ident, "id": 0}
    return ChangeEvent("INSERT", "t", key, KEY_TYPES, {**key, **attributes}, version, Position(SNAPSHOT_SHARD, str(n)))


def event(op: str, ident: str, version: int, seq: int, **attributes: Any) -> ChangeEvent:
    key = {"tenant": ident, "id": 0}
    image = None if op == "REMOVE" else {**key, **attributes}
    return ChangeEvent(op, "t", key, KEY_TYPES, image, version, Position("shardId-000000000001", str(seq)))  # type: ignore[arg-type]


def test_snapshot_items_and_stream_events_keep_the_newest(target: TargetSpec) -> None:
    """The newest wins whatever the arrival order; on an equal version the snapshot item does."""
    v = NOW
    cases = {
        # name: (events in arrival order, the attributes left, or None when the row must be gone)
        "tie, stream first": ([event("MODIFY", "a", v, 1, x=1), snap("a", v, 1, x=2)], {"x": 2}),
        "tie, snapshot first": ([snap("b", v, 2, x=2), event("MODIFY", "b", v, 2, x=1)], {"x": 2}),
        "newer event after": ([snap("c", v, 3, x=2), event("MODIFY", "c", v + 1, 3, x=3)], {"x": 3}),
        "newer event before": ([event("MODIFY", "d", v + 1, 4, x=3), snap("d", v, 4, x=2)], {"x": 3}),
        "older event after": ([snap("e", v, 5, x=2), event("MODIFY", "e", v - 1, 5, x=1)], {"x": 2}),
        "newer remove before": ([event("REMOVE", "f", v + 1, 6), snap("f", v, 6, x=2)], None),
        "older remove after": ([snap("g", v, 7, x=2), event("REMOVE", "g", v - 1, 7)], {"x": 2}),
        "tie remove before": ([event("REMOVE", "h", v, 8), snap("h", v, 8, x=2)], {"x": 2}),
    }
    sink = TableWriter(target)
    try:
        for events, _ in cases.values():
            for change in events:
                sink.apply([change])
    finally:
        sink.close()
    got = read_items(target, KEY_TYPES)
    for name, (events, expected) in cases.items():
        key = canonical_key(events[0].key)
        if expected is None:
            assert key not in got, name
        else:
            assert key in got, name
            assert {k: got[key][k] for k in expected} == expected, name


def test_an_undecodable_item_is_a_dead_letter(
    aws: LocalAws, target: TargetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items DynamoDB holds but the relay cannot store are dead-lettered with their reason, never dropped."""
    table = new_table(aws, items=3)
    spec = table.spec(segments="1")
    snapshot = snapshot_of(spec, target)
    raw = {"tenant": {"S": "bad"}, "id": {"N": "1"}, "n": {"N": "not a number"}}  # what no real table holds
    real = dynamodb.scan_segment

    def with_a_bad_item(*args: Any, **kwargs: Any) -> Iterator[dynamodb.Page]:
        for page in real(*args, **kwargs):
            yield dynamodb.Page(page.version, [*page.items, raw], page.last)

    monkeypatch.setattr(dynamodb, "scan_segment", with_a_bad_item)
    snapshot.run(threading.Event())
    assert snapshot.stats.dead_letters == 1
    relation = f'"{target.schema}"."{target.table}__deadletters"' if target.schema else f'"{target.table}__deadletters"'
    if target.dialect == "cratedb":
        run_sql(target, f"REFRESH TABLE {relation}")
    _, rows = run_sql(target, f"SELECT reason, shard_id FROM {relation}")
    assert len(rows) == 1 and rows[0][1] == SNAPSHOT_SHARD and "not a DynamoDB number" in rows[0][0]


# ---- with a mapping (kcl_relay/mapping) ----------------------------------------------------------------------

ITEMS_MAPPING = f"""
exclude = ["nothing"]
{WORKLOAD_COLUMNS}scores = {{ path = "scores", type = "ARRAY(DOUBLE)" }}
"""


def test_a_mapped_full_load_verifies_exactly(aws: LocalAws, target: TargetSpec, tmp_path: Any) -> None:
    """The table is created with the mapping; the scan's writers (given none) shape rows with the one kept beside
    the table; verify reads the columns back at their paths and finds every item, minus what exclude drops."""
    path = tmp_path / "items.toml"
    path.write_text(ITEMS_MAPPING)
    table = new_table(aws, items=40)
    spec = table.spec(segments="2", mapping=str(path))
    ddb, clock = dynamodb.client(spec), dynamodb.AwsClock()
    info = dynamodb.describe(spec, ddb, clock)
    fullload.prepare_target(target, info, spec.mapping)
    snapshot = fullload.Snapshot(spec, target, ddb, info, clock)
    snapshot.run(threading.Event())
    assert snapshot.complete and snapshot.stats.dead_letters == 0
    no_drift(spec, target)
    no_drift(spec, target, sample=1.0)
    relation = f'"{target.schema}"."{target.table}"' if target.schema else f'"{target.table}"'
    if target.dialect == "cratedb":
        run_sql(target, f"REFRESH TABLE {relation}")
    typed = run_sql(target, f'SELECT count(*) FROM {relation} WHERE "level" = 2 AND "version" = 1')[1][0][0]
    assert typed > 0
    assert all("nothing" not in str(row) for row in run_sql(target, f"SELECT data, aux FROM {relation}")[1])
