"""The sink semantics against a real SQLite file."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from kcl_relay.cdc.event import Item
from kcl_relay.cdc.jsonenc import loads
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.reader import LIVE
from kcl_relay.sink.strategy import OptimisticStrategy
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import TableWriter
from tests.support.sink_suite import SinkSemantics, merge


class TestSQLiteSink(SinkSemantics):
    @pytest.fixture
    def target_url(self, sqlite_url: str) -> str:
        return sqlite_url

    def read(self, spec: TargetSpec) -> dict[Hashable, Item]:
        # pk, data and aux are JSON text whose union is exactly the item; pk is the canonical key_id.
        _, rows = run_sql(spec, f'SELECT pk, data, aux FROM "{spec.table}" WHERE {LIVE}')
        return {pk: merge(loads(pk), loads(data), loads(aux)) for pk, data, aux in rows}

    def poison(self, sink: TableWriter, spec: TargetSpec) -> tuple[str, dict[str, object]]:
        # SQLite stores any text, so a trigger plays the database refusing a row.
        connection = sink.executor.connection()
        connection.driver_connection.execute(
            f'CREATE TRIGGER "{spec.table}_poison" BEFORE INSERT ON "{spec.table}" '
            "WHEN json_extract(NEW.data, '$.poison') IS NOT NULL BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
        return "bad", {"poison": True}


def test_database_is_locked_is_retried(sqlite_url: str) -> None:
    import dataclasses
    import sqlite3
    import threading

    from kcl_relay.sink.retry import RetryPolicy
    from kcl_relay.sink.target import parse_target
    from tests.support.sink_suite import change

    spec = parse_target(sqlite_url, "t")
    impatient = dataclasses.replace(spec, connect_args=(("timeout", 0.0),))  # no busy wait: fail at once
    sink = TableWriter(impatient, retry=RetryPolicy(attempts=20, base_delay=0.05, max_delay=0.2))
    sink.ensure_table({"id": "S"})
    other = sqlite3.connect(str(spec.url.database), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(0.3, other.execute, args=("COMMIT",))
    timer.start()
    try:
        assert sink.retries == 0
        assert sink.apply([change("INSERT", "a", 1, 1)]).upserted == 1
        assert sink.retries >= 1  # counted for the metrics (kcl_relay_database_retries_total)
    finally:
        timer.join()
        other.close()
        sink.close()


def test_tombstone_recheck_undoes_a_write_a_concurrent_remove_superseded(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-check CrateDB needs (no transactions), exercised on a real database: a REMOVE that another worker
    applied between this worker's tombstone read and its upsert must still win."""
    from kcl_relay.sink.target import parse_target
    from tests.support.sink_suite import change

    sink = TableWriter(parse_target(sqlite_url, "t"), strategy=OptimisticStrategy)
    sink.apply([change("INSERT", "a", 1, 1, v=1), change("INSERT", "b", 1, 2, v=1)])
    sink.apply([change("REMOVE", "a", 3, 3)])
    real = sink.strategy.by_key_id
    reads: list[int] = []

    def blind_first(records: list) -> dict:  # the tombstones as read before the upsert, then after it
        reads.append(1)
        return {} if len(reads) == 1 else real(records)

    monkeypatch.setattr(sink.strategy, "by_key_id", blind_first)
    result = sink.apply([change("MODIFY", "a", 2, 2, v=2), change("MODIFY", "b", 2, 4, v=2)])
    assert (result.upserted, result.skipped_stale) == (1, 1)
    assert len(reads) == 2
    _, rows = run_sql(sink.spec, 'SELECT pk, data FROM "t"')
    assert rows == [('{"id":"b"}', '{"v":2}')]
    sink.close()
