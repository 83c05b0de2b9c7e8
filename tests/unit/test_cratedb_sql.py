"""Golden tests: the exact CrateDB statements and parameters, and the writer's use of them through a fake driver."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType, Op, Position
from kcl_relay.cdc.layout import split
from kcl_relay.sink.cratedb import CrateDBDialect, key_text
from kcl_relay.sink.dialect import RowState
from kcl_relay.sink.retry import RetryPolicy
from kcl_relay.sink.target import parse_target
from kcl_relay.sink.writer import TableWriter

KEY_TYPES: dict[str, KeyType] = {"tenant": "S", "id": "N"}
NAMES = ["id", "tenant"]
NEWER = "excluded.cdc_version > cdc_version OR (excluded.cdc_version = cdc_version AND excluded.cdc_order >= cdc_order)"
SEQ = "49590338271490256608559692538361571095921575989136588898"
TOKEN = "0000000000002.0000000049590338271490256608559692538361571095921575989136588898.0000000003"
BIG_ID = 12345678901234567890123456789012345678
WHEN = datetime(2025, 1, 1, tzinfo=timezone.utc)
ORDERS = '"doc"."orders"'


def guarded(column: str) -> str:
    return f"{column} = CASE WHEN {NEWER} THEN excluded.{column} ELSE {column} END"


@pytest.fixture
def dialect() -> CrateDBDialect:
    return CrateDBDialect("doc", "orders")


def event(op: Op = "MODIFY", image: dict[str, Any] | None = None, version: int = 1735689600000001) -> ChangeEvent:
    key = {"tenant": "acme", "id": BIG_ID}
    return ChangeEvent(op, "orders", key, KEY_TYPES, image, version, Position("shardId-1", SEQ, 3))


def test_ddl(dialect: CrateDBDialect) -> None:
    assert dialect.create_tables(KEY_TYPES) == [
        'CREATE TABLE IF NOT EXISTS "doc"."orders" ('
        'pk OBJECT(STRICT) AS ("id" TEXT PRIMARY KEY, "tenant" TEXT PRIMARY KEY), '
        "data OBJECT(DYNAMIC), aux OBJECT(IGNORED), "
        "cdc_version BIGINT NOT NULL, cdc_order TEXT NOT NULL, cdc_event TEXT NOT NULL)",
        'CREATE TABLE IF NOT EXISTS "doc"."orders__tombstones" (key_id TEXT PRIMARY KEY, '
        "cdc_version BIGINT NOT NULL, cdc_order TEXT NOT NULL, deleted_at TIMESTAMP WITH TIME ZONE NOT NULL)",
    ]
    assert dialect.create_dead_letter_table() == (
        'CREATE TABLE IF NOT EXISTS "doc"."orders__deadletters" ('
        "raw TEXT INDEX OFF STORAGE WITH (columnstore = false), "
        "reason TEXT INDEX OFF STORAGE WITH (columnstore = false), "
        "shard_id TEXT, sequence_number TEXT, failed_at TIMESTAMP WITH TIME ZONE)"
    )


def test_identifiers_are_quoted_and_invalid_key_names_refused() -> None:
    odd = CrateDBDialect('my"schema', "t")
    assert odd.relation("__tombstones") == '"my""schema"."t__tombstones"'
    assert "pk['it''s'] = ?" in odd.delete_sql(["it's"])
    for bad in ("_id", "a.b", "a[0]", ""):
        with pytest.raises(ValueError):
            odd.create_tables({bad: "S"})


def test_guarded_bulk_upsert(dialect: CrateDBDialect) -> None:
    updates = ", ".join(guarded(c) for c in ("data", "aux", "cdc_version", "cdc_order", "cdc_event")).replace(
        "excluded.cdc_version ELSE cdc_version END",  # a stale row fails, so the bulk answer tells it from a write
        "excluded.cdc_version ELSE CAST('kcl-relay: stale ' || excluded.cdc_order AS BIGINT) END",
    )
    assert dialect.upsert_sql(NAMES) == (
        'INSERT INTO "doc"."orders" (pk, data, aux, cdc_version, cdc_order, cdc_event) VALUES (?, ?, ?, ?, ?, ?) '
        f"ON CONFLICT (pk['id'], pk['tenant']) DO UPDATE SET {updates}"
    )
    image = {
        "tenant": "acme",
        "id": BIG_ID,
        "price": Decimal("2.5"),  # exact as a double: data, sent as float (the driver would send a string)
        "big": 2**70,  # beyond BIGINT: aux, as exact text marked as a number (cratedb.AUX_NUMBER)
        "frac": Decimal("0.1000000000000000000001"),  # no double equals it: aux, as exact text
        "_hidden": 1,  # not a valid sub-column name: aux
        "tags": ["a", "b"],
    }
    e = event(image=image)
    assert dialect.upsert_params(e, split(e.key, image)) == (
        {"tenant": "acme", "id": "12345678901234567890123456789012345678"},
        {"price": 2.5, "tags": ["a", "b"]},
        {"big": "\ufdd0n1180591620717411303424", "frac": "\ufdd0n0.1000000000000000000001", "_hidden": 1},
        1735689600000001,
        TOKEN,
        "MODIFY",
    )


def test_key_text_is_exact() -> None:
    assert key_text("x") == "x"
    assert key_text(BIG_ID) == "12345678901234567890123456789012345678"
    assert key_text(-(10**37) - 1) == "-10000000000000000000000000000000000001"
    assert key_text(Decimal("-0.125")) == "-0.125"
    assert key_text(Decimal("1E-130")) == "1E-130"
    with pytest.raises(TypeError):
        key_text(1.5)


def test_state_select_and_guarded_delete(dialect: CrateDBDialect) -> None:
    assert dialect.state_sql(NAMES, 2) == (
        "SELECT pk['id'], pk['tenant'], cdc_version, cdc_order, _seq_no, _primary_term FROM \"doc\".\"orders\" "
        "WHERE (pk['id'] = ? AND pk['tenant'] = ?) OR (pk['id'] = ? AND pk['tenant'] = ?)"
    )
    assert dialect.state_sql(["id"], 3) == (  # an OR chain: a real-time Get; IN (?, ...) would be a Collect
        'SELECT pk[\'id\'], cdc_version, cdc_order, _seq_no, _primary_term FROM "doc"."orders" '
        "WHERE pk['id'] = ? OR pk['id'] = ? OR pk['id'] = ?"
    )
    assert dialect.keys_per_read(["id"]) == 100
    assert dialect.keys_per_read(NAMES) == 10  # fastest; from 99 conjunctions on, CrateDB plans a Collect
    assert dialect.delete_sql(NAMES) == (
        "DELETE FROM \"doc\".\"orders\" WHERE pk['id'] = ? AND pk['tenant'] = ? AND _seq_no = ? AND _primary_term = ?"
    )
    e = event("REMOVE")
    key = ("12345678901234567890123456789012345678", "acme")
    assert dialect.key_params(e) == key
    state = dialect.read_state([*key, 1735689600000000, "0.1", 17, 2])
    assert state == RowState(key=key, order=(1735689600000000, "0.1"), token=(17, 2))
    assert state.key == dialect.state_key(e)
    assert dialect.delete_params(e, state, e.order) == (*key, 17, 2)


def test_tombstones(dialect: CrateDBDialect) -> None:
    updates = ", ".join(guarded(c) for c in ("cdc_version", "cdc_order", "deleted_at"))
    assert dialect.tombstone_upsert_sql() == (
        'INSERT INTO "doc"."orders__tombstones" (key_id, cdc_version, cdc_order, deleted_at) VALUES (?, ?, ?, ?) '
        f"ON CONFLICT (key_id) DO UPDATE SET {updates}"
    )
    assert dialect.tombstone_params(event("REMOVE"), WHEN) == (
        '{"id":12345678901234567890123456789012345678,"tenant":"acme"}',
        1735689600000001,
        TOKEN,
        WHEN,
    )
    assert dialect.tombstone_select_sql(2) == (
        'SELECT key_id, cdc_version, cdc_order FROM "doc"."orders__tombstones" WHERE key_id = ? OR key_id = ?'
    )
    assert dialect.tombstone_purge_sql() == 'DELETE FROM "doc"."orders__tombstones" WHERE deleted_at < ?'


def test_dead_letter_insert(dialect: CrateDBDialect) -> None:
    assert dialect.dead_letter_sql() == (
        'INSERT INTO "doc"."orders__deadletters" (raw, reason, shard_id, sequence_number, failed_at) '
        "VALUES (?, ?, ?, ?, ?)"
    )
    letter = DeadLetter("{bad", "not JSON", "shardId-1", SEQ, WHEN)
    assert dialect.dead_letter_params(letter) == ("{bad", "not JSON", "shardId-1", SEQ, WHEN)


def test_row_errors_and_statement_errors(dialect: CrateDBDialect) -> None:
    from crate.client.exceptions import ConnectionError, ProgrammingError

    assert dialect.is_row_error(ProgrammingError("SQLParseException[Cannot cast value `abc` to type `bigint`]"))
    # orjson, in the driver: a lone surrogate is the row's fault; any other TypeError is ours (stop, retry)
    assert dialect.is_row_error(TypeError("str is not valid UTF-8: surrogates not allowed"))
    assert not dialect.is_row_error(TypeError("Integer exceeds 64-bit range"))
    assert not dialect.is_row_error(TypeError("Type is not JSON serializable: Decimal"))
    assert not dialect.is_row_error(ProgrammingError("RelationUnknown[Relation 'doc.orders' unknown]"))
    assert not dialect.is_row_error(ProgrammingError("SQLParseException[line 1:8: mismatched input]"))
    assert not dialect.is_row_error(ProgrammingError("UnavailableShardsException[[doc.orders][1] primary shard"))
    assert not dialect.is_row_error(ConnectionError("No more Servers available"))


# ---- the writer through a fake crate driver ----


class FakeCursor:
    """Answers like the crate driver: executemany returns bulk results, execute sets rows and rowcount."""

    def __init__(self, db: FakeCrate) -> None:
        self.db = db
        self.rowcount = -1
        self._rows: list[list[Any]] = []

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.db.log.append(("execute", sql, list(params or [])))
        self._rows, self.rowcount = self.db.answer(sql, list(params or []))

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> list[dict[str, int]]:
        self.db.log.append(("executemany", sql, rows))
        return [{"rowcount": self.db.bulk_answer(sql, row)} for row in rows]

    def fetchall(self) -> list[list[Any]]:
        return self._rows

    def close(self) -> None:
        pass


class FakeCrate:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, Any]] = []
        self.stored: dict[tuple[str, ...], list[Any]] = {}  # state key -> [version, order, seq_no, term]
        self.poison: set[str] = set()  # tenants whose upserts are rejected
        self.tombstone_reads: list[list[list[Any]]] = []  # answers to successive tombstone SELECTs
        self.clash_in_data_only = False  # reject a single-row upsert only while its `data` is not empty
        self.settings: dict[str, str] = {}  # the relay's settings table (delete_mode)

    def bulk_answer(self, sql: str, row: Sequence[Any]) -> int:
        if sql.startswith('INSERT INTO "doc"."orders" ') and row[0]["tenant"] in self.poison:
            return -2
        return 1

    def answer(self, sql: str, params: list[Any]) -> tuple[list[list[Any]], int]:
        if sql.startswith('INSERT INTO "doc"."orders__relay"'):  # the settings claim: first writer wins
            self.settings.setdefault(params[0], params[1])
            return [], 1
        if sql.startswith('SELECT value FROM "doc"."orders__relay"'):
            return [[self.settings[params[0]]]], 1
        if sql.startswith("SELECT pk['id']"):
            keys = list(zip(params[::2], params[1::2], strict=True))
            return [[*key, *self.stored[key]] for key in keys if key in self.stored], 0
        if sql.startswith("SELECT key_id"):
            return (self.tombstone_reads.pop(0) if self.tombstone_reads else []), 0
        if sql.startswith('INSERT INTO "doc"."orders" '):
            from crate.client.exceptions import ProgrammingError

            if self.clash_in_data_only and not params[1]:
                return [], 1
            raise ProgrammingError("SQLParseException[Cannot cast object element `price` with value `x`]")
        return [], 0

    # the SQLAlchemy-side surface the writer uses
    def raw_connection(self) -> FakeCrate:
        return self

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def invalidate(self) -> None:
        pass

    def dispose(self) -> None:
        pass


def test_writer_statements_through_fake_driver() -> None:
    db = FakeCrate()
    spec = parse_target("crate://localhost:4200/doc/orders", None)
    writer = TableWriter(spec, engine=db, retry=RetryPolicy(attempts=1), clock=lambda: WHEN)  # type: ignore[arg-type]
    writer.ensure_table(KEY_TYPES)
    db.log.clear()
    newer = ("9", "acme")
    older = ("8", "acme")
    db.stored[newer] = [1735689600000009, "z", 5, 1]  # a newer row: the REMOVE is stale
    db.stored[older] = [1, "a", 7, 1]  # an older row: deleted by key + _seq_no + _primary_term
    db.poison.add("bad")

    def make(op: Op, tenant: str, ident: int, image: bool = True) -> ChangeEvent:
        key = {"tenant": tenant, "id": ident}
        return ChangeEvent(op, "orders", key, KEY_TYPES, dict(key) if image else None, 1735689600000001,
                           Position("shardId-1", SEQ))  # fmt: skip

    result = writer.apply([
        make("REMOVE", "acme", 9, image=False),
        make("REMOVE", "acme", 8, image=False),
        make("INSERT", "acme", 1),
        make("INSERT", "bad", 2),
    ])  # fmt: skip
    kinds = [(kind, sql.split(" (")[0].split(" WHERE")[0]) for kind, sql, _ in db.log]
    # The REMOVEs first, then the upserts, each in their own order.
    removing = [
        ("executemany", 'INSERT INTO "doc"."orders__tombstones"'),
        ("execute", "SELECT pk['id'], pk['tenant'], cdc_version, cdc_order, _seq_no, _primary_term FROM " + ORDERS),
        ("executemany", 'DELETE FROM "doc"."orders"'),
    ]
    assert kinds[: len(removing)] == removing
    assert [kind for kind in kinds if kind not in removing] == [
        ("execute", "SELECT column_name, data_type FROM information_schema.columns"),  # data's types, once
        ("execute", 'SELECT key_id, cdc_version, cdc_order FROM "doc"."orders__tombstones"'),
        ("executemany", 'INSERT INTO "doc"."orders"'),  # no read of the rows first: the upsert tells stale rows
        ("execute", 'INSERT INTO "doc"."orders"'),  # the rejected row, re-run alone for its reason
        ("execute", 'SELECT key_id, cdc_version, cdc_order FROM "doc"."orders__tombstones"'),  # the re-check
        ("executemany", 'INSERT INTO "doc"."orders__deadletters"'),
        ("execute", 'DELETE FROM "doc"."orders__tombstones"'),  # the first purge, then at most every 5 minutes
    ]  # fmt: skip
    assert [rows for _, sql, rows in db.log if sql.startswith('DELETE FROM "doc"."orders" ')] == [[("8", "acme", 7, 1)]]
    assert (result.upserted, result.deleted, result.skipped_stale) == (1, 1, 1)
    (letter,) = result.dead_letters
    assert letter.reason == "rejected by cratedb: ProgrammingError: SQLParseException[Cannot cast object element " \
        "`price` with value `x`]"  # fmt: skip
    assert "REFRESH" not in " ".join(sql for _, sql, _ in db.log)


def test_recheck_removes_a_row_that_a_concurrent_remove_superseded() -> None:
    """Another worker's newer REMOVE lands between our tombstone read and our upsert: the re-check undoes it."""
    db = FakeCrate()
    spec = parse_target("crate://localhost:4200/doc/orders", None)
    writer = TableWriter(spec, engine=db, retry=RetryPolicy(attempts=1), clock=lambda: WHEN)  # type: ignore[arg-type]
    writer.ensure_table(KEY_TYPES)
    key_id = '{"id":5,"tenant":"acme"}'
    db.tombstone_reads = [[], [[key_id, 1735689600000009, "z"]]]  # not there before the upsert, there after it
    db.stored[("5", "acme")] = [1735689600000001, "0" * 64 + ".0000000000", 11, 1]  # what our upsert wrote
    db.log.clear()
    e = ChangeEvent("INSERT", "orders", {"tenant": "acme", "id": 5}, KEY_TYPES, {"tenant": "acme", "id": 5},
                    1735689600000001, Position("shardId-1", "0"))  # fmt: skip
    result = writer.apply([e])
    assert (result.upserted, result.skipped_stale) == (0, 1)
    deletes = [rows for kind, sql, rows in db.log if sql.startswith('DELETE FROM "doc"."orders" ')]
    assert deletes == [[("5", "acme", 11, 1)]]


def test_settings_claim(dialect: CrateDBDialect) -> None:
    """The relay's own settings (the source table): first writer wins, read back by primary key (real time)."""
    assert dialect.create_settings_table() == (
        'CREATE TABLE IF NOT EXISTS "doc"."orders__relay" (name TEXT PRIMARY KEY, value TEXT)'
    )
    assert dialect.claim_setting_sql() == (
        'INSERT INTO "doc"."orders__relay" (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING'
    )
    assert dialect.setting_sql() == 'SELECT value FROM "doc"."orders__relay" WHERE name = ?'


@pytest.mark.parametrize(
    ("message", "row_error"),
    [
        ("ColumnValidationException[Validation failed for data['n']: Cannot cast value `x` to type `bigint`]", True),
        ("MapperParsingException[failed to parse]: Mixed dataTypes inside a list are not supported", True),
        ("RelationUnknown[Relation 'doc.orders' unknown]", False),
        ("SomethingNewException[the cluster did something unexpected]", False),  # unknown: retried, never skipped
    ],
)
def test_only_value_errors_make_dead_letters(dialect: CrateDBDialect, message: str, row_error: bool) -> None:
    from crate.client import exceptions as crate_errors

    assert dialect.is_row_error(crate_errors.ProgrammingError(message)) is row_error


def test_a_row_whose_data_clashes_with_earlier_types_is_stored_in_aux() -> None:
    """data['price'] became BIGINT on earlier rows; now it is text: the row goes whole into aux, not dead letters."""
    db = FakeCrate()
    spec = parse_target("crate://localhost:4200/doc/orders", None)
    writer = TableWriter(spec, engine=db, retry=RetryPolicy(attempts=1), clock=lambda: WHEN)  # type: ignore[arg-type]
    writer.ensure_table(KEY_TYPES)
    db.poison.add("clash")
    db.clash_in_data_only = True
    key = {"tenant": "clash", "id": 3}
    event = ChangeEvent("INSERT", "orders", key, KEY_TYPES, {**key, "price": "x", "n": 1}, 1735689600000001,
                        Position("shardId-1", SEQ))  # fmt: skip
    db.log.clear()
    result = writer.apply([event])
    assert (result.upserted, result.dead_letters) == (1, [])
    single = [
        params for kind, sql, params in db.log if kind == "execute" and sql.startswith('INSERT INTO "doc"."orders" ')
    ]
    assert [row[1:3] for row in single] == [[{"n": 1, "price": "x"}, {}], [{}, {"n": 1, "price": "x"}]]
