"""The relay as a user with the least privileges (issue 20.5), on the real CrateDB and PostgreSQL servers.

An admin runs `kcl-relay ddl --apply` once; then a user with only DQL and DML (CrateDB: GRANT DQL, DML ON SCHEMA;
PostgreSQL: USAGE on the schema, SELECT, INSERT, UPDATE, DELETE on its tables) relays a file whose items add new
attributes as they go (on CrateDB new dynamic sub-columns of `data`), a REMOVE (tombstones), a record of no
DynamoDB item (a dead letter) and the source table's claim (`__relay`): the table ends exact. Without a privilege
it needs, the relay stops before it starts with one line naming the privilege and the object.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from kcl_relay.cli import cli
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from tests.support.records import cdc_record
from tests.support.tables import read_items, same_value

T0 = 1_735_689_600_000_000
PASSWORD = "lp-" + uuid.uuid4().hex[:12]


@dataclass
class Server:
    dialect: str
    admin_url: str  # a URL of the admin, without a table
    schema: str  # a schema of this test alone
    user: str

    def admin(self, table: str) -> TargetSpec:
        return parse_target(self.admin_url, f"{self.schema}.{table}")

    def user_url(self) -> str:
        url = make_url(self.admin_url).set(username=self.user, password=PASSWORD)
        if self.dialect == "cratedb":
            url = url.set(database=self.schema)
        return url.render_as_string(hide_password=False)

    def sql(self, statement: str) -> None:
        run_sql(self.admin("-"), statement, commit=True)

    def grant(self, *, write: bool = True) -> None:
        if self.dialect == "cratedb":
            self.sql(f'GRANT DQL{", DML" if write else ""} ON SCHEMA "{self.schema}" TO "{self.user}"')
            return
        self.sql(f'GRANT USAGE ON SCHEMA "{self.schema}" TO "{self.user}"')
        privileges = "SELECT, INSERT, UPDATE, DELETE" if write else "SELECT"
        self.sql(f'GRANT {privileges} ON ALL TABLES IN SCHEMA "{self.schema}" TO "{self.user}"')


@pytest.fixture(params=["cratedb", "postgresql"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    admin_url: str = request.getfixturevalue(f"{request.param}_url")
    suffix = uuid.uuid4().hex[:10]
    found = Server(request.param, admin_url, f"lp_{suffix}", f"relay_{suffix}")
    if request.param == "cratedb":
        found.sql(f"CREATE USER \"{found.user}\" WITH (password = '{PASSWORD}')")
    else:
        found.sql(f"CREATE ROLE \"{found.user}\" LOGIN PASSWORD '{PASSWORD}'")
    try:
        yield found
    finally:
        if request.param == "cratedb":
            tables = run_sql(
                found.admin("-"),
                f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{found.schema}'",
            )[1]
            for (table,) in tables:
                found.sql(f'DROP TABLE IF EXISTS "{found.schema}"."{table}"')
            found.sql(f'DROP USER IF EXISTS "{found.user}"')
        else:
            found.sql(f'DROP SCHEMA IF EXISTS "{found.schema}" CASCADE')
            found.sql(f'DROP ROLE IF EXISTS "{found.user}"')


def cdc_file(path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Records whose items add attributes as they go, one REMOVE, one record without Keys; and the end state."""
    records = [
        cdc_record("INSERT", "a", T0 + 1, note="first"),
        cdc_record("INSERT", "b", T0 + 2, note="second", colour="red"),
        cdc_record("MODIFY", "a", T0 + 3, note="changed", size="L", shape="round"),
        cdc_record("INSERT", "c", T0 + 4, gone="soon"),
        cdc_record("REMOVE", "c", T0 + 5),
    ]
    number = cdc_record("INSERT", "d", T0 + 6)
    number["dynamodb"]["NewImage"]["count"] = {"N": "12345678901234567890123456789012345678"}
    number["dynamodb"]["NewImage"]["nested"] = {"M": {"deep": {"M": {"flag": {"BOOL": True}}}}}
    broken = cdc_record("INSERT", "e", T0 + 7)
    del broken["dynamodb"]["Keys"]
    path.write_text("\n".join(json.dumps(record) for record in [*records, number, broken]) + "\n")
    expected = {
        '{"id":"a"}': {"id": "a", "note": "changed", "size": "L", "shape": "round"},
        '{"id":"b"}': {"id": "b", "note": "second", "colour": "red"},
        '{"id":"d"}': {
            "id": "d",
            "count": int("12345678901234567890123456789012345678"),
            "nested": {"deep": {"flag": True}},
        },
    }
    return path, expected


def relay(server: Server, source: str, table: str) -> Result:
    table = f"{server.schema}.{table}"  # PostgreSQL: else schema public
    return CliRunner().invoke(cli, ["load", "table", source, "--target", server.user_url(), "--table", table])


def test_a_relay_as_a_dql_dml_user_after_the_admins_ddl_ends_exact(server: Server, tmp_path: Path) -> None:
    path, expected = cdc_file(tmp_path / "cdc.ndjson")
    source = f"kinesis+dynamodb+cdc://{path}?batch-size=2&retry-timeout=5"
    table = "items"
    printed = CliRunner().invoke(
        cli, ["ddl", source, "--target", server.admin_url, "--table", f"{server.schema}.{table}"]
    )
    assert printed.exit_code == 0, printed.output
    statements = printed.stdout.splitlines()
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        assert any(f'"{server.schema}"."{table}{suffix}" (' in line for line in statements), statements
    applied = CliRunner().invoke(
        cli, ["ddl", source, "--target", server.admin_url, "--table", f"{server.schema}.{table}", "--apply"]
    )
    assert applied.exit_code == 0, applied.output
    server.grant()

    result = relay(server, source, table)
    assert result.exit_code == 0, result.output
    assert "1 dead letters" in result.stderr, result.stderr
    spec = server.admin(table)
    got = read_items(spec, {"id": "S"})
    assert got.keys() == expected.keys()
    for key, item in expected.items():
        assert same_value(item, got[key]), (key, got[key])
    if server.dialect == "cratedb":  # DML alone added the new dynamic sub-columns
        columns = run_sql(
            spec,
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = '{server.schema}' AND table_name = '{table}'",
        )[1]
        assert {"data['size']", "data['nested']['deep']['flag']"} <= {column for (column,) in columns}
    again = CliRunner().invoke(
        cli, ["ddl", source, "--target", server.admin_url, "--table", f"{server.schema}.{table}", "--apply"]
    )
    assert again.exit_code == 0 and "created nothing" in again.stderr, again.output


def test_without_ddl_privilege_and_nothing_created_the_relay_says_which_privilege_in_one_line(
    server: Server, tmp_path: Path
) -> None:
    path, _ = cdc_file(tmp_path / "cdc.ndjson")
    if server.dialect == "postgresql":
        server.sql(f'CREATE SCHEMA "{server.schema}"')
    server.sql(f'CREATE TABLE "{server.schema}"."other" (i INTEGER)')  # the schema exists; the relay's tables not
    server.grant()
    result = relay(server, f"kinesis+dynamodb+cdc://{path}?retry-timeout=60", "items")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    privilege = "DDL on schema" if server.dialect == "cratedb" else "CREATE on schema"
    assert line.startswith(f"kcl-relay: error: missing privilege {privilege} {server.schema} for user "), line
    assert f"{server.schema}.items" in line and "kcl-relay ddl --apply" in line, line


def test_without_dml_privilege_the_relay_says_which_privilege_and_table_in_one_line(
    server: Server, tmp_path: Path
) -> None:
    path, _ = cdc_file(tmp_path / "cdc.ndjson")
    source = f"kinesis+dynamodb+cdc://{path}?retry-timeout=60"
    applied = CliRunner().invoke(
        cli, ["ddl", source, "--target", server.admin_url, "--table", f"{server.schema}.items", "--apply"]
    )
    assert applied.exit_code == 0, applied.output
    server.grant(write=False)
    result = relay(server, source, "items")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    privilege = "DML" if server.dialect == "cratedb" else "INSERT"
    assert line.startswith(f"kcl-relay: error: missing privilege {privilege} on table {server.schema}.items"), line
