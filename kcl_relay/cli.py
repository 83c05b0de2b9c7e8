"""kcl-relay's command line: `load table`, `run`, `shell`, `show table`, and `local` for the emulators."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click

from kcl_relay.kcl.daemon import SetupError
from kcl_relay.kcl.properties import read_properties, spec_from_properties
from kcl_relay.localaws.cli import local
from kcl_relay.pipeline import routed_table_name
from kcl_relay.sink.target import TargetError, TargetSpec, parse_target
from kcl_relay.source.table_url import describe_table_options, is_table_url, parse_table
from kcl_relay.source.url import SourceError, describe_options, parse_source

TARGET_ENV = "CRATEDB_SQLALCHEMY_URL"
EMBEDDED_DEFAULT = "sqlite:///kcl-relay.sqlite"
USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Bad input: one line, exit code 2, nothing started."""
    click.echo(f"kcl-relay: error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def resolve_target(target: str | None, table: str | None, default_table: str | None = None) -> TargetSpec:
    url = target or os.environ.get(TARGET_ENV)
    if not url:
        url = EMBEDDED_DEFAULT
        table = table or default_table
        click.echo(
            f"kcl-relay: no --target and no {TARGET_ENV}: using the embedded default {url} (table {table})", err=True
        )
    try:
        return parse_target(url, table)
    except TargetError as error:
        fail(str(error))


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--table", metavar="SCHEMA.TABLE", help="Target table; overrides a table named in the target URL."
    )(command)
    return click.option(
        "--target",
        metavar="URL",
        help=f"Target database URL (crate://, postgresql://, sqlite:///); default: ${TARGET_ENV}, "
        f"else {EMBEDDED_DEFAULT}.",
    )(command)


def run_guarded(action: Callable[[], int]) -> NoReturn:
    """Map the errors found before anything starts to one line and exit code 2."""
    try:
        code = action()
    except (SourceError, TargetError, SetupError) as error:
        fail(str(error))
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="kcl-relay")
def cli() -> None:
    """Relay DynamoDB change data capture from a Kinesis stream into CrateDB (or PostgreSQL, SQLite)."""


@cli.group()
def load() -> None:
    """Load data into the target."""


TABLE_EPILOG = "\b\nTable options of dynamodb:// (?name=value&...):\n" + describe_table_options()


@load.command("table", epilog="\b\nSource options (?name=value&...):\n" + describe_options() + "\n\n" + TABLE_EPILOG)
@click.argument("source")
@target_options
def load_table(source: str, target: str | None, table: str | None) -> None:
    """Relay SOURCE into the target table.

    \b
    SOURCE is kinesis+dynamodb+cdc://[KEY:SECRET@]HOST[:PORT]/STREAM[?options]
    (HOST "aws": AWS's endpoints of the region; any other HOST:PORT: one endpoint
    for Kinesis and the KCL lease table, e.g. LocalStack), or
    kinesis+dynamodb+cdc:///ABS/PATH.ndjson to replay a file of CDC records, or
    dynamodb://[KEY:SECRET@]HOST[:PORT]/TABLE[?options] to copy a whole table
    (full load), with stream=STREAM followed by the table's Kinesis stream.
    """
    from kcl_relay import relay  # imported late: --help must not wait for boto3 and SQLAlchemy

    if is_table_url(source):
        _load_dynamodb_table(source, target, table)
    try:
        spec = parse_source(source)
    except SourceError as error:
        fail(str(error))
    default_table = routed_table_name(spec.stream or Path(spec.path or "cdc").stem)
    resolved = resolve_target(target, table, default_table)
    if spec.is_file:
        run_guarded(lambda: relay.replay_file(spec, resolved))
    run_guarded(lambda: relay.run_stream(spec, resolved))


def _load_dynamodb_table(source: str, target: str | None, table: str | None) -> NoReturn:
    from kcl_relay import fullload

    try:
        spec = parse_table(source)
    except SourceError as error:
        fail(str(error))
    resolved = resolve_target(target, table, routed_table_name(spec.table))
    run_guarded(lambda: fullload.load_table(spec, resolved))


@cli.command("verify", epilog=TABLE_EPILOG)
@click.argument("source")
@target_options
@click.option(
    "--sample",
    type=click.FloatRange(0, 1, min_open=True),
    metavar="FRACTION",
    help="Compare a random sample (e.g. 0.01): that fraction of the table by Scan segments, and as many random "
    "target rows looked up in DynamoDB. Default: everything.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Look at differing keys again after this long (twice): changes on their way do not count. 0: no second look.",
)
@click.option("--show", type=click.IntRange(0), default=10, show_default=True, help="Differing keys named per kind.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def verify(
    source: str, target: str | None, table: str | None, sample: float | None, settle: float, show: int, as_json: bool
) -> None:
    """Compare the target table with the DynamoDB table: exit 0 in sync, 1 on drift.

    \b
    SOURCE is the full load's dynamodb://[KEY:SECRET@]HOST[:PORT]/TABLE[?options].
    Counts, keys missing in the target, keys extra in it, and items that differ
    (per-key digests of the item as the relay stores it) go to stdout.
    """
    from kcl_relay import verify as verifier

    try:
        spec = parse_table(source)
    except SourceError as error:
        fail(str(error))
    resolved = resolve_target(target, table, routed_table_name(spec.table))
    options = verifier.VerifyOptions(sample=sample, settle=settle, show=show, as_json=as_json)
    run_guarded(lambda: verifier.run(spec, resolved, options, out=click.echo))


@cli.command("run")
@click.option(
    "--properties",
    "properties_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A KCL multilang properties file (streamName, applicationName, regionName, ...) with our "
    "kclrelay.* keys; secrets come from the environment.",
)
@target_options
def run_properties(properties_file: Path, target: str | None, table: str | None) -> None:
    """Run a worker from a KCL properties file (manual runs, systemd, fleets)."""
    from kcl_relay import relay

    if not properties_file.is_file():
        fail(f"properties file not found: {properties_file}")
    try:
        spec, kcl_props, relay_props = spec_from_properties(read_properties(properties_file))
    except SourceError as error:
        fail(str(error))
    resolved = resolve_target(target, table or relay_props.get("table"), routed_table_name(spec.stream or "cdc"))
    run_guarded(lambda: relay.run_stream(spec, resolved, kcl_props))


@cli.command("shell")
@click.option("--command", "sql", required=True, help="SQL to run against the target database.")
@click.option("--target", metavar="URL", help=f"Target database URL; default: ${TARGET_ENV}.")
def shell(sql: str, target: str | None) -> None:
    """Run one SQL statement against the target and print the result."""
    from kcl_relay.sink import admin

    spec = _admin_target(target)
    run_guarded(lambda: _query(lambda: admin.run_sql(spec, sql, commit=True)))


@cli.group()
def show() -> None:
    """Show things in the target."""


@show.command("table")
@click.argument("name", metavar="SCHEMA.TABLE")
@click.option("--target", metavar="URL", help=f"Target database URL; default: ${TARGET_ENV}.")
def show_table(name: str, target: str | None) -> None:
    """Print the rows of a target table."""
    from kcl_relay.sink import admin

    spec = _admin_target(target, name)
    run_guarded(lambda: _query(lambda: admin.show_table(spec, name)))


def _admin_target(target: str | None, table: str = "-") -> TargetSpec:
    url = target or os.environ.get(TARGET_ENV)
    if not url:
        fail(f"no --target and no {TARGET_ENV}")
    try:
        return parse_target(url, table)
    except TargetError as error:
        fail(str(error))


def _query(run: Callable[[], tuple[list[str], list[tuple]]]) -> int:
    """Run a query for a person: its rows on stdout, or the database's complaint as one line and exit code 1."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        columns, rows = run()
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        click.echo(f"kcl-relay: error: {reason}", err=True)
        return 1
    return _print_rows(columns, rows)


def _print_rows(columns: list[str], rows: list[tuple]) -> int:
    """Rows as JSON lines on stdout: readable, and exact for scripts."""
    from kcl_relay.cdc.jsonenc import dumps

    for row in rows:
        click.echo(dumps({column: _plain(value) for column, value in zip(columns, row, strict=True)}))
    click.echo(f"({len(rows)} rows)", err=True)
    return 0


def _plain(value: Any) -> Any:
    """A database value as JSON: SQLite's JSON text parsed, timestamps ISO 8601, bytes base64, the rest as text."""
    from kcl_relay.cdc.jsonenc import loads

    if isinstance(value, str) and value[:1] in "{[":
        try:
            return loads(value)  # SQLite keeps JSON as text
        except ValueError:
            return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if value is None or isinstance(value, (str, int, float, bool, Decimal, dict, list)):
        return value
    return str(value)  # UUID, intervals, ...


cli.add_command(local)


def main() -> None:
    cli(prog_name="kcl-relay")
