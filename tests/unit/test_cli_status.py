"""`kcl-relay status` through click, on moto in process: which lease table it reads, exit codes, --properties."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws

from kcl_relay.cli import cli
from kcl_relay.kcl.leases import LeaseTables, prepare_leases
from kcl_relay.relay import application_name
from kcl_relay.sink.target import parse_target
from kcl_relay.source import kinesis as kinesis_source
from kcl_relay.source.url import parse_source

STREAM = "orders-cdc"
URL = f"kinesis+dynamodb+cdc://aws/{STREAM}?region=eu-central-1"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["status", *args], prog_name="kcl-relay", env={"CRATEDB_SQLALCHEMY_URL": None})


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any]]:
    kinesis_source.client.cache_clear()  # clients are cached per source: none from another test's mock
    with mock_aws():
        session = boto3.Session(region_name="eu-central-1")
        kinesis, dynamodb = session.client("kinesis"), session.client("dynamodb")
        kinesis.create_stream(StreamName=STREAM, ShardCount=2)
        yield kinesis, dynamodb
    kinesis_source.client.cache_clear()


def leases_for(aws: tuple[Any, Any], application: str) -> None:
    kinesis, dynamodb = aws
    assert prepare_leases(dynamodb, kinesis, LeaseTables.of({"applicationName": application}), STREAM, "LATEST").created


def test_finds_the_lease_table_the_relay_names_after_stream_and_target(aws: tuple[Any, Any], tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'r.db'}"
    application = application_name(parse_source(URL), parse_target(target, "orders"))
    leases_for(aws, application)
    done = run(URL, "--target", target, "--table", "orders")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == f"lease table {application} (application {application}), stream {STREAM} at AWS eu-central-1"
    assert (
        lines[1]
        == "2 shards (2 open), 2 leases, 0 workers holding leases; 2 waiting for a new owner; every shard caught up"
    )
    assert [line.split()[1:4] for line in lines[4:]] == [["(waiting)", "LATEST", "no"]] * 2


def test_another_target_table_is_another_application(aws: tuple[Any, Any], tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'r.db'}"
    leases_for(aws, application_name(parse_source(URL), parse_target(target, "orders")))
    done = run(URL, "--target", target, "--table", "other")
    assert done.exit_code == 1
    assert "the relay never ran with these settings" in done.stderr


def test_json_with_app(aws: tuple[Any, Any]) -> None:
    leases_for(aws, "orders-relay")
    done = run(f"{URL}&app=orders-relay", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["lease_table"], report["stream"], report["caught_up"]) == ("orders-relay", STREAM, True)
    assert [shard["checkpoint"] for shard in report["shards"]] == ["LATEST", "LATEST"]


def test_properties_file(aws: tuple[Any, Any], tmp_path: Path) -> None:
    leases_for(aws, "relay-from-file")
    properties = tmp_path / "w.properties"
    properties.write_text(f"streamName = {STREAM}\napplicationName = relay-from-file\nregionName = eu-central-1\n")
    done = run("--properties", str(properties), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["lease_table"] == "relay-from-file"


def test_a_missing_stream_is_bad_input(aws: tuple[Any, Any]) -> None:
    leases_for(aws, "orders-relay")
    done = run(URL.replace(STREAM, "no-such-stream") + "&app=orders-relay")
    assert done.exit_code == 2
    # the embedded default target is said first: it names the application when --target is not given
    assert "using the embedded default sqlite:///kcl-relay.sqlite" in done.stderr.splitlines()[0]
    assert (
        done.stderr.splitlines()[-1]
        == "kcl-relay: error: Kinesis stream 'no-such-stream' not found at AWS eu-central-1"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "status needs SOURCE or --properties FILE (one of them)"),
        (("kinesis+dynamodb+cdc:///tmp/x.ndjson",), "status needs a Kinesis stream, not a file replay"),
        (("dynamodb://aws/orders",), "status needs a stream: add stream=STREAM to the dynamodb:// URL"),
        (("--properties", "/nonexistent.properties"), "properties file not found: /nonexistent.properties"),
    ],
)
def test_bad_input(args: tuple[str, ...], message: str) -> None:
    done = run(*args)
    assert done.exit_code == 2
    assert done.stderr == f"kcl-relay: error: {message}\n"
