"""kcl-relay's command line: `load table`, `run`, `ddl`, `shell`, `show table`, and `local` for the emulators.

Imports of boto3, SQLAlchemy and the emulators wait until a command needs them: `--help` and bad input answer in a
fraction of a second.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from kcl_relay.kcl.daemon import SetupError
from kcl_relay.kcl.properties import read_properties_file, spec_from_properties
from kcl_relay.options import SOURCE_OPTIONS
from kcl_relay.source.table_url import describe_table_options, is_table_url, parse_table
from kcl_relay.source.url import DYNAMODB_STREAMS, SourceError, SourceSpec, describe_options, parse_source

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
        # The default table holds with an explicit target too (docs/full-load.md), unless the URL names a table.
        return parse_target(url, table, default_table)
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
    dynamodb+cdc://[KEY:SECRET@]HOST[:PORT]/TABLE[?options] for the table's own
    DynamoDB stream (docs/sources.md), or
    dynamodb://[KEY:SECRET@]HOST[:PORT]/TABLE[?options] to copy a whole table
    (full load), with stream=STREAM followed by the table's Kinesis stream
    (stream=:dynamodb: by its DynamoDB stream).
    """
    if is_table_url(source):
        _load_dynamodb_table(source, target, table)
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


def _load_dynamodb_table(source: str, target: str | None, table: str | None) -> NoReturn:
    from kcl_relay import fullload

    try:
        spec = parse_table(source)
    except SourceError as error:
        fail(str(error))
    from kcl_relay.pipeline import routed_table_name

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
    from kcl_relay.pipeline import routed_table_name

    resolved = resolve_target(target, table, routed_table_name(spec.table))
    options = verifier.VerifyOptions(sample=sample, settle=settle, show=show, as_json=as_json)
    run_guarded(lambda: verifier.run(spec, resolved, options, out=click.echo))


@cli.command("status")
@click.argument("source", required=False)
@target_options
@click.option(
    "--properties",
    "properties_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A worker's KCL properties file (as for `run`), instead of SOURCE: its applicationName and stream.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for machines.")
def status(
    source: str | None, target: str | None, table: str | None, properties_file: Path | None, as_json: bool
) -> None:
    """Show each shard's lease owner (alive or gone), checkpoint and lag, and the shards that wait for a new owner.

    \b
    SOURCE and the target as given to `load table` (they name the application, so its
    lease table): kinesis+dynamodb+cdc://HOST/STREAM[?options], or a full load's
    dynamodb://HOST/TABLE?stream=STREAM. Per shard: the worker holding its lease, the
    checkpoint (a sequence number, TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END),
    whether it is closed (resharded) and finished (SHARD_END checkpointed), and how far
    the checkpoint is behind the tip (the stream's MillisBehindLatest). An owner is alive when
    one of its leases' counters moves (its KCL renews them every third of the failover time),
    gone when its KCL worker metrics entry is stale or its counters stand still for the
    failover time; a gone owner's leases, and leases without one, wait for a new owner.
    Exit 0; 1 when the lease table does not exist; 2 on bad input.
    """
    if (source is None) == (properties_file is None):
        fail("status needs SOURCE or --properties FILE (one of them)")
    if properties_file is not None:
        if not properties_file.is_file():
            fail(f"properties file not found: {properties_file}")
        try:
            spec, kcl_props, _ = spec_from_properties(read_properties_file(properties_file))
        except SourceError as error:
            fail(str(error))
        from kcl_relay.kcl.leases import LeaseTables

        lease_table = LeaseTables.of(kcl_props).leases
        worker_props = kcl_props
        dynamodb_endpoint = kcl_props.get("dynamoDBEndpoint")
        if dynamodb_endpoint and dynamodb_endpoint != spec.endpoint_url:
            spec = dataclasses.replace(spec, dynamodb_endpoint=dynamodb_endpoint)
    else:
        assert source is not None
        spec, default_table = _stream_of(source)
        from kcl_relay.pipeline import routed_table_name
        from kcl_relay.relay import application_name

        resolved = resolve_target(target, table, routed_table_name(default_table))
        lease_table = application_name(spec, resolved)  # as the relay names it: the same lease table
        worker_props = {}
    from kcl_relay.kcl import report

    run_guarded(lambda: report.show(spec, lease_table, as_json=as_json, out=click.echo, kcl_props=worker_props))


def _stream_of(source: str) -> tuple[SourceSpec, str]:
    """The stream side of a stream URL, or of a full load's table URL with stream=; and the default target table
    `load table` would name after it."""
    try:
        if is_table_url(source):
            table_spec = parse_table(source)
            if table_spec.stream is None:
                fail("status needs a stream: add stream=STREAM to the dynamodb:// URL")
            return table_spec.stream, table_spec.table
        spec = parse_source(source)
    except SourceError as error:
        fail(str(error))
    if spec.stream is None:
        fail("status needs a Kinesis stream, not a file replay")
    return spec, spec.stream


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
@click.option(
    "--reset",
    is_flag=True,
    help=f"{SOURCE_OPTIONS['reset'].help.capitalize()}; as kclrelay.reset = true does.",
)
@click.option(
    "--worker-id",
    metavar="ID",
    help=f"{SOURCE_OPTIONS['worker-id'].help}; wins over workerId in the file (the systemd template unit passes "
    "%H-%i).",
)
def run_properties(
    properties_file: Path, target: str | None, table: str | None, reset: bool, worker_id: str | None
) -> None:
    """Run a worker from a KCL properties file (manual runs, systemd, fleets)."""
    if not properties_file.is_file():
        fail(f"properties file not found: {properties_file}")
    try:
        spec, kcl_props, relay_props = spec_from_properties(read_properties_file(properties_file))
    except SourceError as error:
        fail(str(error))
    if reset or worker_id:
        import dataclasses

        spec = dataclasses.replace(spec, reset=spec.reset or reset, worker_id=worker_id or spec.worker_id)
    if worker_id:
        kcl_props = {key: value for key, value in kcl_props.items() if key not in ("workerId", "workerIdentifier")}
        kcl_props["workerId"] = worker_id
    from kcl_relay import relay
    from kcl_relay.pipeline import routed_table_name

    resolved = resolve_target(target, table or relay_props.get("table"), routed_table_name(spec.stream or "cdc"))
    run_guarded(lambda: relay.run_stream(spec, resolved, kcl_props))


@cli.command("check")
@click.option(
    "--properties",
    "properties_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A worker's KCL properties file (as for `run`).",
)
def check_properties(properties_file: Path) -> None:
    """Check a KCL properties file as `run --properties` does, starting nothing and calling no endpoint.

    Exit code 0 and one line when it passes; else exit code 2 and the line `run` would stop with: an unknown key
    or one the KCL would ignore (e.g. consumerName outside fanoutConfig), a bad value, a missing stream.
    """
    if not properties_file.is_file():
        fail(f"properties file not found: {properties_file}")
    try:
        spec, kcl_props, relay_props = spec_from_properties(read_properties_file(properties_file))
    except SourceError as error:
        fail(str(error))
    stream = f"of DynamoDB table {spec.stream}" if spec.kind == DYNAMODB_STREAMS else spec.stream
    click.echo(
        f"{properties_file}: ok (stream {stream}, application {kcl_props['applicationName']}, "
        f"{len(kcl_props)} KCL keys, {len(relay_props)} kclrelay.* keys)"
    )


@cli.command("ddl", epilog="\b\nSource options (?name=value&...): as for `load table`.")
@click.argument("source")
@target_options
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="NAME:TYPE",
    help="A key attribute of the DynamoDB table and its type (S, N or B); repeat it for a range key. Needed for a "
    "Kinesis stream (ddl reads no record of it); a file's records and a dynamodb:// table name their key.",
)
@click.option("--apply", is_flag=True, help="Create what is missing (as a user allowed to) instead of printing it.")
def ddl_command(source: str, target: str | None, table: str | None, keys: tuple[str, ...], apply: bool) -> None:
    """Print every statement the relay runs to create what it needs in the target.

    \b
    SOURCE, --target and --table as given to `load table` (so the tables are named
    the same way, route-tables=true included): the target table, <table>__tombstones,
    <table>__deadletters and <table>__relay. With them created (--apply, by a user
    with DDL privileges), the relay runs as a user with DQL and DML privileges only
    (docs/deploy.md, "Least privilege"): it creates only what is missing.
    """
    from kcl_relay.sink import ddl

    parts = _ddl_parts(source, target, table, keys)
    mapping = _source_mapping(source)

    def run() -> int:
        from kcl_relay.sink.executor import StatementExecutor
        from kcl_relay.sink.retry import RetryPolicy
        from kcl_relay.sink.writer import dialect_for

        for spec, key_types, settings in parts:
            dialect = dialect_for(spec)
            table_mapping = mapping.for_table(spec.table) if mapping else None
            if table_mapping is not None and key_types is not None:
                try:
                    table_mapping.check_key(key_types)  # partition-by of a key attribute, no column of one
                except ValueError as error:
                    fail(f"{mapping.path if mapping else ''}: {error}")
            steps = ddl.plan(dialect, key_types, settings, table_mapping)
            if not apply:
                for step in steps:
                    click.echo(step.sql + ";")
                continue
            executor = StatementExecutor(spec, dialect, RetryPolicy())
            try:
                created = ddl.ensure(executor, steps)
            finally:
                executor.close()
            made = ", ".join(f"{step.kind} {step.shown}" for step in created) or "nothing"
            click.echo(f"kcl-relay: {spec.describe()}: created {made}; {len(steps) - len(created)} existed", err=True)
        return 0

    def applied() -> int:
        from kcl_relay.sink.admin import check_reachable

        check_reachable(parts[0][0])  # an unusable target: the one line the relay's start would say
        return _query(run, parts[0][0])

    run_guarded(applied if apply else run)


def _parse_keys(keys: tuple[str, ...]) -> dict[str, Any] | None:
    types: dict[str, Any] = {}
    for text in keys:
        name, _, kind = text.rpartition(":")
        if not name or kind.upper() not in ("S", "N", "B"):
            fail(f"--key {text!r}: give NAME:TYPE with TYPE S, N or B")
        types[name] = kind.upper()
    return types or None


def _source_mapping(source: str) -> Any:
    """The mapping file named by the source URL's `mapping=` (a MappingFile), or None; parsed and checked already."""
    from kcl_relay.mapping.spec import load_mapping

    try:
        path = parse_table(source).mapping if is_table_url(source) else parse_source(source).mapping
    except SourceError as error:
        fail(str(error))
    return load_mapping(path) if path else None


def _ddl_parts(
    source: str, target: str | None, table: str | None, keys: tuple[str, ...]
) -> list[tuple[TargetSpec, Any, bool]]:
    """(target, key types or None, whether the relay's settings table is used) per table the relay would create:
    resolved as `load table` resolves them."""
    from kcl_relay.pipeline import routed_table_name, target_for

    key_types = _parse_keys(keys)
    try:
        if is_table_url(source):
            table_spec = parse_table(source)
            resolved = resolve_target(target, table, routed_table_name(table_spec.table))
            if key_types is None:
                from kcl_relay.source import dynamodb

                key_types = dict(dynamodb.describe(table_spec, dynamodb.client(table_spec, preflight=True)).key_types)
            return [(resolved, key_types, True)]
        spec = parse_source(source)
    except SourceError as error:
        fail(str(error))
    resolved = resolve_target(target, table, routed_table_name(spec.stream or Path(spec.path or "cdc").stem))
    if spec.is_file:
        found = _file_keys(Path(spec.path or ""), spec.route_tables)
        if spec.route_tables:
            routed = [(target_for(resolved, name or None), types, False) for name, types in sorted(found.items())]
            return [*routed, (resolved, None, False)]  # the dead letters stay beside the target
        key_types = key_types or next(iter(found.values()), None)
    elif spec.route_tables:
        fail("ddl of a stream with route-tables=true: run it per DynamoDB table, with --table and --key")
    if key_types is None:
        fail("ddl needs the table's key for a Kinesis stream: --key NAME:TYPE (S, N or B), once per key attribute")
    return [(resolved, key_types, True)]


def _file_keys(path: Path, route_tables: bool) -> dict[str, Any]:
    """The key of each DynamoDB table in a file of CDC records (the first decodable record of each)."""
    from kcl_relay.cdc.decode import DecodeError, decode
    from kcl_relay.source.replay import read_records

    if not path.is_file():
        fail(f"replay file not found: {path}")
    found: dict[str, Any] = {}
    for record in read_records(path):
        try:
            event = decode(record)
        except DecodeError:
            continue
        found.setdefault(event.table_name or "", dict(event.key_types))
        if not route_tables:
            break
    return found


@cli.command("setup-kcl")
@click.option(
    "--maven-repo",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="PATH",
    help="A local Maven repository to take the jars from, offline (a copy of ~/.m2/repository, for a machine "
    "without network).",
)
@click.option("--offline", is_flag=True, help="Take the jars from Maven's own local repository (~/.m2), offline.")
@click.option("--force", is_flag=True, help="Fetch the jars again even where they are already.")
def setup_kcl(maven_repo: Path | None, offline: bool, force: bool) -> None:
    """Fetch the KCL MultiLangDaemon's jars through Maven (mvn), and build the launcher.

    \b
    The jars go to $KCL_RELAY_JARS when set, else into amazon-kclpy's own jars
    folder when writable, else ~/.cache/kcl-relay; `run` and `load table` find them
    there. Needs Java 17+ and Maven; nothing else is downloaded.
    """
    from kcl_relay.kcl import jars
    from kcl_relay.kcl.daemon import find_java

    if maven_repo is not None and not maven_repo.is_dir():
        fail(f"no local Maven repository at {maven_repo}")
    try:
        find_java()  # Maven, the launcher's build and the KCL all run on it
    except SetupError as error:
        fail(str(error))
    try:
        folder = jars.fetch(maven_repo=maven_repo, offline=offline or maven_repo is not None, force=force)
    except jars.JarsError as error:
        click.echo(f"kcl-relay: error: {error}", err=True)
        sys.exit(1)
    run_guarded(lambda: build_launcher(folder, fetch_adapter=not (offline or maven_repo is not None)))


def build_launcher(jar_folder: Path, fetch_adapter: bool = True) -> int:
    """setup-kcl's one call site of the launcher's build: javac against the jars (none with KCL_RELAY_DAEMON=multilang,
    the stock MultiLangDaemon, which needs no JDK); with the DynamoDB Streams adapter's jar too, so a dynamodb+cdc://
    source starts without fetching or building anything."""
    from kcl_relay.kcl import launcher
    from kcl_relay.kcl.adapter import find_adapter_jar

    built = launcher.for_run(jar_folder)
    click.echo(f"kcl-relay: KCL launcher: {built or 'not built (the stock MultiLangDaemon runs)'}", err=True)
    if built is None:
        return 0
    try:
        adapter = find_adapter_jar(jar_folder, fetch=fetch_adapter)
    except SetupError as error:  # only dynamodb+cdc:// needs it; it is fetched at its first run then
        click.echo(f"kcl-relay: the DynamoDB Streams adapter is not set up ({error})", err=True)
        return 0
    click.echo(
        f"kcl-relay: KCL launcher with the DynamoDB Streams adapter: {launcher.for_run(jar_folder, adapter)}", err=True
    )
    return 0


ADMIN_TARGET_HELP = f"Target database URL; default: ${TARGET_ENV}, else {EMBEDDED_DEFAULT}."


@cli.command("redrive")
@target_options
@click.option("--batch-size", type=click.IntRange(1, 10000), default=1000, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Re-drive at most this many dead letters (oldest first).")
def redrive_command(target: str | None, table: str | None, batch_size: int, limit: int | None) -> None:
    """Apply the target table's dead letters again, once their cause is fixed.

    \b
    Each record of <table>__deadletters is decoded and applied as the record it was,
    at its own stream position (an old record never overwrites a newer row). Those
    that apply are deleted from the dead letters; those that fail again stay, with
    today's reason.
    """
    from kcl_relay.redrive import redrive
    from kcl_relay.sink.admin import check_reachable

    spec = resolve_target(target, table)

    def run() -> int:
        check_reachable(spec)
        report = redrive(spec, batch_size=batch_size, limit=limit)
        click.echo(
            f"kcl-relay: re-drove {report.letters} dead letter(s) of {spec.qualified_table}: {report.applied} applied "
            f"and removed, {report.failed_again} failed again (kept, with today's reason)",
            err=True,
        )
        return 0 if report.failed_again == 0 else 1

    run_guarded(lambda: _query(run, spec))


@cli.command("shell")
@click.option("--command", "sql", required=True, help="SQL to run against the target database.")
@click.option("--target", metavar="URL", help=ADMIN_TARGET_HELP)
def shell(sql: str, target: str | None) -> None:
    """Run one SQL statement against the target and print the result as JSON lines."""
    from kcl_relay.sink import admin

    spec = _admin_target(target)

    def query() -> int:
        outcome = admin.run_statement(spec, sql, commit=True)
        for row in outcome.rows:
            fields = [(column, _plain(value)) for column, value in zip(outcome.columns, row, strict=True)]
            click.echo(_json_object(fields))
        click.echo(admin.count_line(outcome, sql), err=True)
        return 0

    run_guarded(lambda: _query(query, spec))


@cli.group()
def show() -> None:
    """Show things in the target."""


ROW_VIEW_COLUMNS = ("pk", "data", "aux", "cdc_version", "cdc_order", "cdc_event")


@show.command("table")
@click.argument("name", metavar="SCHEMA.TABLE")
@click.option("--target", metavar="URL", help=ADMIN_TARGET_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Rows to print at most.")
@click.option("--raw", is_flag=True, help="Print the stored columns (pk, data, aux, ...) instead of the items.")
def show_table(name: str, target: str | None, limit: int, raw: bool) -> None:
    """Print the rows of a table, in primary key order: one JSON document per row.

    \b
    A relay target table prints as its DynamoDB items, key attributes first, with
    the change that wrote each row under "_cdc"; --raw prints the stored columns.
    """
    from kcl_relay.sink import admin

    spec = _admin_target(target, name)

    def query() -> int:
        from kcl_relay.sink.writer import dialect_for

        page = admin.show_table(spec, name, limit=limit)
        as_items = not raw and tuple(page.columns[:6]) == ROW_VIEW_COLUMNS
        load = dialect_for(spec).load_document  # items as they are (stored escapes undone); --raw as stored
        for row in page.rows:
            values = [_plain(value) for value in row]
            if as_items:
                values[:3] = [load(value, column) for value, column in zip(values[:3], ROW_VIEW_COLUMNS, strict=False)]
                if page.mapping is not None:  # mapped columns back at their attribute paths
                    values = admin.with_columns(spec, page.mapping, values, row)
            fields = _item_fields(values) if as_items else list(zip(page.columns, values, strict=True))
            click.echo(_json_object(fields))
        order = f"ordered by {', '.join(page.order)}" if page.order else "in no particular order (no primary key)"
        if page.total > len(page.rows):
            click.echo(f"(first {len(page.rows)} of {page.total} rows, {order}; --limit N shows more)", err=True)
        else:
            click.echo(f"({admin.rows_text(page.total)}, {order})", err=True)
        return 0

    run_guarded(lambda: _query(query, spec))


def _item_fields(values: list[Any]) -> list[tuple[str, Any]]:
    """A target row as its item: key attributes first, then the others by name, then what wrote it."""
    pk, data, aux, version, _order, event = values
    rest = {**(data or {}), **(aux or {})}
    fields = [*sorted((pk or {}).items()), *sorted(rest.items())]
    return [*fields, ("_cdc", {"event": event, "version": _micros_iso(version)})]


def _micros_iso(micros: Any) -> Any:
    try:
        return datetime.fromtimestamp(int(micros) / 1e6, tz=timezone.utc).isoformat(timespec="microseconds")
    except (TypeError, ValueError, OverflowError):
        return micros


def _json_object(fields: list[tuple[str, Any]]) -> str:
    """One JSON object with the fields in the order given (jsonenc sorts keys; a person wants the key first)."""
    from kcl_relay.cdc.jsonenc import dumps

    return "{" + ",".join(f"{dumps(name)}:{dumps(value)}" for name, value in fields) + "}"


def _admin_target(target: str | None, table: str = "-") -> TargetSpec:
    from kcl_relay.sink.target import TargetError, parse_target

    url = target or os.environ.get(TARGET_ENV) or EMBEDDED_DEFAULT
    try:
        return parse_target(url, table)
    except TargetError as error:
        fail(str(error))


def _query(run: Callable[[], int], spec: TargetSpec) -> int:
    """Run a query for a person: the database's complaint is one line on stderr and exit code 1; when the target
    itself cannot be used (unreachable, TLS, authentication), that line says so, as at the relay's start."""
    from sqlalchemy.exc import SQLAlchemyError

    from kcl_relay.sink.admin import check_reachable
    from kcl_relay.sink.target import TargetError

    try:
        return run()
    except (SQLAlchemyError, OSError) as error:
        try:
            check_reachable(spec)
        except TargetError as unusable:
            click.echo(f"kcl-relay: error: {unusable}", err=True)
            return 1
        if isinstance(error, OSError):
            raise
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        click.echo(f"kcl-relay: error: {reason}", err=True)
        return 1


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
