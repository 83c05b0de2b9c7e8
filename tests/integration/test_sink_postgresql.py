"""The sink semantics against a real PostgreSQL server, started for the test session (tests/support/postgres.py)."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from kcl_relay.cdc.event import Item
from kcl_relay.cdc.jsonenc import dumps, loads
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.postgresql import item_document
from kcl_relay.sink.reader import LIVE
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import TableWriter
from tests.support.sink_suite import SinkSemantics, merge

pytestmark = pytest.mark.postgres


class TestPostgreSQLSink(SinkSemantics):
    ddl_race_rounds = 15

    @pytest.fixture
    def target_url(self, postgres_url: str) -> str:
        return postgres_url

    def read(self, spec: TargetSpec) -> dict[Hashable, Item]:
        # ::text and jsonenc.loads (in item_document) keep numbers exact (psycopg would load JSONB numbers as floats).
        relation = f'"{spec.schema}"."{spec.table}"'
        # item_document undoes the NUL escape (kcl_relay/sink/postgresql.py), as the relay's own reader does.
        _, rows = run_sql(spec, f"SELECT pk::text, data::text, aux::text FROM {relation} WHERE {LIVE}")
        return {
            dumps(item_document(pk)): merge(item_document(pk), item_document(data), item_document(aux))
            for pk, data, aux in rows
        }

    def poison(self, sink: TableWriter, spec: TargetSpec) -> tuple[str, dict[str, object]]:
        # JSONB holds every DynamoDB value (NUL too, escaped), so a CHECK constraint plays the database refusing a
        # row: SQLSTATE 23514, an integrity violation.
        self.execute(spec, f'ALTER TABLE "{spec.schema}"."{spec.table}" ADD CHECK (NOT data ? \'poison\')')
        return "bad", {"poison": True}


def test_sql_keeps_numbers_exact_and_uses_c_collation(postgres_url: str) -> None:
    from kcl_relay.sink.postgresql import PostgreSQLDialect

    dialect = PostgreSQLDialect("cdc", "orders")
    assert dialect.upsert_sql(["id"]) == (
        'INSERT INTO "cdc"."orders" AS cur (pk, data, aux, cdc_version, cdc_order, cdc_event) '
        "VALUES (%s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s) ON CONFLICT (pk) DO UPDATE SET data = excluded.data, "
        "aux = excluded.aux, cdc_version = excluded.cdc_version, cdc_order = excluded.cdc_order, "
        "cdc_event = excluded.cdc_event WHERE (cur.cdc_version, cur.cdc_order) <= "
        "(excluded.cdc_version, excluded.cdc_order)"
    )
    assert 'cdc_order TEXT COLLATE "C" NOT NULL' in dialect.create_tables({"id": "N"})[1]
    assert dialect.create_tables({"id": "N"})[0] == 'CREATE SCHEMA IF NOT EXISTS "cdc"'


def test_a_lost_connection_is_retried(postgres_url: str) -> None:
    from kcl_relay.sink.retry import RetryPolicy
    from kcl_relay.sink.target import parse_target
    from tests.support.sink_suite import change

    spec = parse_target(postgres_url, "lost_connection")
    sink = TableWriter(spec, retry=RetryPolicy(attempts=4, base_delay=0.01))
    try:
        sink.apply([change("INSERT", "a", 1, 1)])
        pid = sink.executor.connection().driver_connection.info.backend_pid
        run_sql(spec, f"SELECT pg_terminate_backend({pid})")
        assert sink.retries == 0
        result = sink.apply([change("INSERT", "b", 2, 2)])  # the first statement fails, the retry reconnects
        assert result.upserted == 1
        assert sink.retries == 1  # counted for the metrics (kcl_relay_database_retries_total)
        _, rows = run_sql(spec, 'SELECT count(*) FROM "public"."lost_connection"')
        assert rows == [(2,)]
    finally:
        sink.close()


def test_a_revoked_privilege_is_waited_for_like_an_outage(postgres_url: str) -> None:
    """INSERT revoked from the relay's role mid-run (SQLSTATE 42501): not about a row, so the batch is retried, not
    dead-lettered, and lands once the privilege is granted again."""
    import threading
    import uuid

    from sqlalchemy.engine import make_url

    from kcl_relay.sink.base import ApplyResult
    from kcl_relay.sink.retry import RetryPolicy
    from kcl_relay.sink.target import parse_target
    from tests.support.e2e import wait_for
    from tests.support.sink_suite import change

    role = f"relay_{uuid.uuid4().hex[:8]}"
    admin = parse_target(postgres_url, f"revoked_{role}")
    run_sql(admin, f"CREATE ROLE {role} LOGIN", commit=True)
    run_sql(admin, f"GRANT CREATE, USAGE ON SCHEMA public TO {role}", commit=True)
    as_role = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    spec = parse_target(as_role, admin.table)
    sink = TableWriter(spec, retry=RetryPolicy(timeout=120, base_delay=0.05, max_delay=0.5))
    try:
        sink.apply([change("INSERT", "a", 1, 1, v=0)])
        run_sql(admin, f'REVOKE INSERT, UPDATE ON "public"."{spec.table}" FROM {role}', commit=True)
        outcome: list[object] = []

        def apply() -> None:
            try:
                outcome.append(sink.apply([change("INSERT", "b", 2, 2, v=1)]))
            except BaseException as error:  # reported below, in the test's thread
                outcome.append(error)

        thread = threading.Thread(target=apply)
        thread.start()
        wait_for(lambda: sink.retries > 0 or outcome, 60, "the writer to retry")
        run_sql(admin, f'GRANT INSERT, UPDATE ON "public"."{spec.table}" TO {role}', commit=True)
        thread.join(timeout=120)
        (result,) = outcome
        assert isinstance(result, ApplyResult), result
        assert (result.upserted, result.dead_letters) == (1, [])
        _, rows = run_sql(admin, f'SELECT pk::text FROM "public"."{spec.table}" ORDER BY 1')
        assert rows == [('{"id": "a"}',), ('{"id": "b"}',)]
    finally:
        sink.close()
        for suffix in ("", "__tombstones", "__deadletters"):
            run_sql(admin, f'DROP TABLE IF EXISTS "public"."{spec.table}{suffix}"', commit=True)
        run_sql(admin, f"DROP OWNED BY {role}", commit=True)
        run_sql(admin, f"DROP ROLE {role}", commit=True)


def test_nul_is_stored_escaped_in_jsonb(postgres_url: str) -> None:
    """What someone querying the JSONB sees for NUL (U+0000): MARK (U+FDD0) + "0"; MARK itself as MARK + "1"."""
    from decimal import Decimal

    from kcl_relay.sink.postgresql import MARK
    from kcl_relay.sink.target import parse_target
    from tests.support.sink_suite import nul_event

    spec = parse_target(postgres_url, "nul_escaped")
    sink = TableWriter(spec)
    try:
        # numbers beside the NULs stay exact (the escaped documents are encoded again, with jsonenc)
        item = {
            "h": "a\x00b",
            "r": MARK,
            "s": "x\x00y",
            "n\x00": {"k\x00": MARK + "0", "f": Decimal("0.1")},
            "big": 10**37,
        }
        assert sink.apply([nul_event("INSERT", item, 1, 1)]).dead_letters == []
        sql = 'SELECT pk::text, data::text, aux::text FROM "public"."nul_escaped"'
        ((pk, data, aux),) = run_sql(spec, sql)[1]
        stored = loads(pk) | loads(data) | loads(aux)
        escaped = {"k\ufdd00": "\ufdd010", "f": Decimal("0.1")}
        assert stored == {"h": "a\ufdd00b", "r": "\ufdd01", "s": "x\ufdd00y", "n\ufdd00": escaped, "big": 10**37}
        # a query by the escaped value finds the row; read through the relay, the item is exact
        found = run_sql(
            spec, "SELECT count(*) FROM \"public\".\"nul_escaped\" WHERE data->>'s' = 'x' || chr(64976) || '0y'"
        )
        assert found[1] == [(1,)]
        assert item_document(pk) | item_document(data) | item_document(aux) == item
    finally:
        sink.close()
        for suffix in ("", "__tombstones", "__deadletters"):
            run_sql(spec, f'DROP TABLE IF EXISTS "public"."nul_escaped{suffix}"', commit=True)
