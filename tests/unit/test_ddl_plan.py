"""The plan of what the relay creates (kcl_relay/sink/ddl.py): each statement named by the object it creates, the same
plan the writer runs, so a start creates only what is missing (and runs no DDL when everything exists)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kcl_relay.sink import ddl
from kcl_relay.sink.target import parse_target
from kcl_relay.sink.writer import TableWriter, dialect_for

URLS = {
    "cratedb": "crate://crate@localhost:4200/shop",
    "postgresql": "postgresql://u@localhost/db",
    "sqlite": "sqlite:////tmp/x.db",
}


@pytest.mark.parametrize("dialect", sorted(URLS))
def test_every_statement_is_named_by_the_object_it_creates(dialect: str) -> None:
    spec = parse_target(URLS[dialect], 'shop.or"ders')
    steps = ddl.plan(dialect_for(spec), {"id": "S", "at": "N"})
    tables = [step.name for step in steps if step.kind == "table"]
    assert tables == ['or"ders', 'or"ders__tombstones', 'or"ders__deadletters', 'or"ders__relay']
    if dialect != "sqlite":
        assert {step.shown for step in steps if step.kind == "table"} == {f"shop.{name}" for name in tables}
    if dialect == "postgresql":
        assert (steps[0].kind, steps[0].name) == ("schema", "shop")
    if dialect != "cratedb":
        assert [step.name for step in steps if step.kind == "index"] == ['or"ders__tombstones_deleted_at']


def test_a_statement_it_cannot_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a CREATE"):
        ddl.step_of("ALTER TABLE t ADD COLUMN x TEXT", None)


def test_a_writer_runs_ddl_only_for_what_is_missing(tmp_path: Path) -> None:
    spec = parse_target(f"sqlite:///{tmp_path / 'r.db'}", "t")
    first = TableWriter(spec)
    try:
        first.ensure_table({"id": "S"})
        first.claim_source_table("t")
        assert ddl.missing(first.executor, ddl.plan(first.dialect, {"id": "S"})) == []
    finally:
        first.close()
    second = TableWriter(spec)
    ran: list[str] = []
    for name in ("execute", "execute_all", "fetch"):
        original = getattr(second.executor, name)

        def recording(cursor: Any, sql: Any, *rest: Any, _original: Any = original) -> Any:
            ran.extend([sql] if isinstance(sql, str) else list(sql))
            return _original(cursor, sql, *rest)

        setattr(second.executor, name, recording)
    try:
        second.ensure_table({"id": "S"})
        assert ran and ran[0].startswith("SELECT")  # the look at what exists (and the mapping kept beside it)
        assert not [sql for sql in ran if sql.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))], ran  # no DDL
    finally:
        second.close()
