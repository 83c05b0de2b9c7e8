"""`kcl-relay ddl` through click: the tables named as `load table` names them, the key from each kind of source."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
from click.testing import CliRunner, Result
from moto import mock_aws

from kcl_relay.cli import cli
from tests.support.records import cdc_record


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["ddl", *args], prog_name="kcl-relay", env={"CRATEDB_SQLALCHEMY_URL": None})


def tables(result: Result) -> list[str]:
    return [line.split(" (")[0].removeprefix("CREATE TABLE IF NOT EXISTS ") for line in result.stdout.splitlines()
            if line.startswith("CREATE TABLE")]  # fmt: skip


def test_a_dynamodb_table_gives_its_key_and_its_name(tmp_path: Path) -> None:
    with mock_aws():
        boto3.client("dynamodb", region_name="eu-central-1").create_table(
            TableName="shop.orders",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "at", "AttributeType": "N"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        result = run("dynamodb://aws/shop.orders?region=eu-central-1", "--target", "crate://crate@db:4200/s")
    assert result.exit_code == 0, result.output
    assert tables(result) == ['"s"."shop_orders"', '"s"."shop_orders__tombstones"', '"s"."shop_orders__deadletters"',
                              '"s"."shop_orders__relay"']  # fmt: skip
    assert '("at" TEXT PRIMARY KEY, "id" TEXT PRIMARY KEY)' in result.stdout


def test_a_stream_needs_the_key_given(tmp_path: Path) -> None:
    url = "kinesis+dynamodb+cdc://aws/orders-cdc?region=eu-central-1"
    missing = run(url, "--target", "postgresql://u@db/app")
    assert (missing.exit_code, missing.stdout) == (2, "")
    assert missing.stderr.startswith("kcl-relay: error: ddl needs the table's key for a Kinesis stream: --key")
    given = run(url, "--target", "postgresql://u@db/app", "--key", "id:S")
    assert given.exit_code == 0, given.output
    assert tables(given)[0] == '"public"."orders_cdc"'
    assert run(url, "--target", "postgresql://u@db/app", "--key", "id:X").exit_code == 2


def test_routed_tables_of_a_file_each_get_their_tables_and_apply_creates_only_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "cdc.ndjson"
    records = [cdc_record("INSERT", "a", 1, table="orders"), cdc_record("INSERT", "b", 2, table="users")]
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    source, target = f"kinesis+dynamodb+cdc://{path}?route-tables=true", f"sqlite:///{tmp_path / 'r.db'}"
    printed = run(source, "--target", target, "--table", "base")
    assert printed.exit_code == 0, printed.output
    assert tables(printed) == ['"orders"', '"orders__tombstones"', '"orders__deadletters"', '"users"',
                               '"users__tombstones"', '"users__deadletters"', '"base__deadletters"']  # fmt: skip
    first = run(source, "--target", target, "--table", "base", "--apply")
    assert first.exit_code == 0, first.output
    assert "created table orders, table orders__tombstones, index orders__tombstones_deleted_at" in first.stderr
    again = run(source, "--target", target, "--table", "base", "--apply")
    assert again.exit_code == 0 and again.stderr.count("created nothing") == 3, again.output
