"""`kcl-relay shell` and `show table` on every database: the same item prints the same way, and a write says how
many rows it changed, as the database counted them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kcl_relay.cdc.event import ChangeEvent, Position
from kcl_relay.cli import cli
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter

DIALECTS = ["cratedb", "postgresql", "sqlite"]
T0 = 1_735_689_600_000_000  # µs


def put(ident: str, version: int, **attributes: Any) -> ChangeEvent:
    key = {"id": ident}
    return ChangeEvent(
        "INSERT", "t", key, {"id": "S"}, {**key, **attributes}, T0 + version, Position("s", str(version))
    )


@pytest.fixture(params=DIALECTS)
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, TargetSpec]]:
    """A target URL of each database and a fresh table there (the URL without the table: as a person gives it)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    spec = parse_target(url, f"c_{uuid.uuid4().hex[:12]}")
    yield url, spec
    writer = TableWriter(spec)
    try:
        with spec.create_engine().begin() as connection:
            for suffix in ("", DEADLETTERS_SUFFIX, TOMBSTONES_SUFFIX):
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {writer.dialect.relation(suffix)}")
    finally:
        writer.close()


def cli_run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), prog_name="kcl-relay")
    assert result.exit_code == 0, result.output
    return result


def write(spec: TargetSpec, *events: ChangeEvent) -> None:
    writer = TableWriter(spec)
    try:
        writer.apply(list(events))
    finally:
        writer.close()


def test_shell_says_how_many_rows_a_write_changed(target: tuple[str, TargetSpec]) -> None:
    url, spec = target
    write(spec, put("a", 1, n=1), put("b", 2, n=2), put("c", 3, n=3))
    relation = spec.qualified_table
    if spec.dialect == "cratedb":
        cli_run("shell", "--command", f"REFRESH TABLE {relation}", "--target", url)
    one = cli_run("shell", "--command", f"UPDATE {relation} SET cdc_event = 'MODIFY' WHERE cdc_version = {T0 + 1}",
                  "--target", url)  # fmt: skip
    assert (one.stdout, one.stderr) == ("", "(1 row affected)\n")
    two = cli_run("shell", "--command", f"DELETE FROM {relation} WHERE cdc_version > {T0 + 1}", "--target", url)
    assert two.stderr == "(2 rows affected)\n"
    if spec.dialect == "cratedb":
        cli_run("shell", "--command", f"REFRESH TABLE {relation}", "--target", url)
    none = cli_run("shell", "--command", f"DELETE FROM {relation} WHERE cdc_version > {T0 + 1}", "--target", url)
    assert none.stderr == "(0 rows affected)\n"
    rows = cli_run("shell", "--command", f"SELECT cdc_event FROM {relation}", "--target", url)
    assert (rows.stdout, rows.stderr) == ('{"cdc_event":"MODIFY"}\n', "(1 row)\n")
    ddl = cli_run("shell", "--command", f"CREATE TABLE {relation}_x (i INTEGER)", "--target", url)
    assert ddl.stderr == "(done)\n"  # CrateDB counts 1 for it: not a row changed
    cli_run("shell", "--command", f"DROP TABLE {relation}_x", "--target", url)


def shown_items(url: str, spec: TargetSpec) -> list[str]:
    return cli_run("show", "table", spec.qualified_table, "--target", url).stdout.splitlines()


def test_show_table_prints_an_item_the_same_way_on_every_database(target: tuple[str, TargetSpec]) -> None:
    url, spec = target
    write(spec, put("a", 1, n=2, x=Decimal("0.1"), neg=-7, s="text", tags=["x", "y"], m={"k": Decimal("1.5")}))
    shown = cli_run("show", "table", spec.qualified_table, "--target", url)
    assert shown.stderr.startswith("(1 row, ordered by "), shown.stderr
    (line,) = shown.stdout.splitlines()
    assert line == (
        '{"id":"a","m":{"k":1.5},"n":2,"neg":-7,"s":"text","tags":["x","y"],"x":0.1,'
        '"_cdc":{"event":"INSERT","version":"2025-01-01T00:00:00.000001+00:00"}}'
    )


EXACT = {"big": int("9" * 38), "fraction": Decimal("0.12345678901234567890123456789"), "huge": Decimal("-1.5E+100")}


def test_show_table_prints_dynamodb_numbers_as_exact_json_numbers(target: tuple[str, TargetSpec]) -> None:
    """A DynamoDB N of 38 digits, or with more digits than a double holds, prints as the exact JSON number (CrateDB
    keeps it in aux as marked decimal text: cratedb.AUX_NUMBER)."""
    url, spec = target
    write(spec, put("a", 1, **EXACT))
    (line,) = shown_items(url, spec)
    item = json.loads(line, parse_float=Decimal)
    assert {name: item[name] for name in EXACT} == EXACT
    assert line.startswith('{"id":"a","big":99999999999999999999999999999999999999,"fraction":0.1234567890123456789012')
