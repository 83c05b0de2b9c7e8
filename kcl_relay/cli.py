"""kcl-relay's command line: `load table`, `run`, `shell`, `show table`, and `local` for the emulators.

Imports of boto3, SQLAlchemy and the emulators wait until a command needs them: `--help` and bad input answer in a
fraction of a second.
"""

from __future__ import annotations

import base64
import importlib
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from kcl_relay.kcl.daemon import SetupError
from kcl_relay.kcl.properties import read_properties, spec_from_properties
from kcl_relay.source.url import SourceError, describe_options, parse_source

if TYPE_CHECKING:
    from kcl_relay.sink.target import TargetSpec

TARGET_ENV = "CRATEDB_SQLALCHEMY_URL"
EMBEDDED_DEFAULT = "sqlite:///kcl-relay.sqlite"
USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Bad input: one line, exit code 2, nothing started."""
    click.echo(f"kcl-relay: error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def resolve_target(target: str | None, table: str | None, default_table: str | None = None) -> TargetSpec:
    from kcl_relay.sink.target import TargetError, parse_target

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
    from kcl_relay.sink.target import TargetError

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


@load.command("table", epilog="\b\nSource options (?name=value&...):\n" + describe_options())
@click.argument("source")
@target_options
def load_table(source: str, target: str | None, table: str | None) -> None:
    """Relay SOURCE into the target table.

    \b
    SOURCE is kinesis+dynamodb+cdc://[KEY:SECRET@]HOST[:PORT]/STREAM[?options]
    (HOST "aws": AWS's endpoints of the region; any other HOST:PORT: one endpoint
    for Kinesis and the KCL lease table, e.g. LocalStack), or
    kinesis+dynamodb+cdc:///ABS/PATH.ndjson to replay a file of CDC records.
    """
    try:
        spec = parse_source(source)
    except SourceError as error:
        fail(str(error))
    from kcl_relay import relay  # only now: --help and bad input must not wait for boto3 and SQLAlchemy
    from kcl_relay.pipeline import routed_table_name

    default_table = routed_table_name(spec.stream or Path(spec.path or "cdc").stem)
    resolved = resolve_target(target, table, default_table)
    if spec.is_file:
        run_guarded(lambda: relay.replay_file(spec, resolved))
    run_guarded(lambda: relay.run_stream(spec, resolved))


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
    if not properties_file.is_file():
        fail(f"properties file not found: {properties_file}")
    try:
        spec, kcl_props, relay_props = spec_from_properties(read_properties(properties_file))
    except SourceError as error:
        fail(str(error))
    from kcl_relay import relay
    from kcl_relay.pipeline import routed_table_name

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
    from kcl_relay.sink.target import TargetError, parse_target

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


class LazyGroup(click.Group):
    """A command group imported when it runs: listed in --help by its short help alone."""

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name, help=short_help)
        self.target = target  # "module:attribute"

    def real(self) -> click.Group:
        module, attribute = self.target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any):
        return self.real().make_context(info_name, args, parent=parent, **extra)


cli.add_command(
    LazyGroup(
        "local",
        "kcl_relay.localaws.cli:local",
        "Local AWS emulators (moto under hypercorn) for demos and tests: Kinesis, DynamoDB (+ Streams), CloudWatch.",
    )
)


def main() -> None:
    cli(prog_name="kcl-relay")
