"""`kcl-relay local ...`: run the moto emulators, set up a demo table and stream, pump the table's changes."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from kcl_relay.localaws.pump import PumpClients, PumpError, PumpState, StreamPump
from kcl_relay.localaws.server import (
    DEFAULT_PORT,
    LocalAwsError,
    aws_client,
    serve_forever,
    start_detached,
    stop_detached,
)
from kcl_relay.localaws.workload import create_stream, create_table, run_workload
from kcl_relay.stopflag import StopFlag

__all__ = ["local"]

KEY_TYPES = ("S", "N", "B")
FILE = click.Path(dir_okay=False, path_type=Path)
PIDFILE = Path("localaws.pid")


class CliError(click.ClickException):
    exit_code = 2


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Expected failures (emulators down, AWS errors, bad files) as one line and exit code 2, no traceback."""
    try:
        yield
    except ClientError as error:
        info = error.response.get("Error", {})
        raise CliError(f"{error.operation_name}: {info.get('Code')}: {info.get('Message')}") from error
    except (BotoCoreError, LocalAwsError, PumpError, OSError, ValueError) as error:
        raise CliError(str(error).splitlines()[0] if str(error) else type(error).__name__) from error


def _key_attribute(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    name, _, kind = value.rpartition(":")
    if not name or kind not in KEY_TYPES:
        raise click.BadParameter(f"expected NAME:TYPE with TYPE one of {', '.join(KEY_TYPES)}, got {value!r}")
    return name, kind


def _endpoint_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--endpoint",
        "endpoint_url",
        default=f"http://127.0.0.1:{DEFAULT_PORT}",
        show_default=True,
        help="URL of the emulators (kcl-relay local up).",
    )(func)


@click.group("local", context_settings={"help_option_names": ["-h", "--help"]})
def local() -> None:
    """Local AWS emulators (moto under hypercorn) for demos and tests: Kinesis, DynamoDB (+ Streams), CloudWatch."""


@local.command("up")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="0: any free port."
)
@click.option("--detach", is_flag=True, help="Run in the background; print the endpoint URL and return.")
@click.option("--pidfile", type=FILE, default=PIDFILE, show_default=True)
@click.option("--log-file", type=FILE, help="With --detach; default: PIDFILE.log.")
def up(port: int, detach: bool, pidfile: Path, log_file: Path | None) -> None:
    """Serve the emulators on 127.0.0.1:PORT, in the foreground until Ctrl+C, or in the background with --detach."""
    with _one_line_errors():
        if detach:
            click.echo(start_detached(port, pidfile, log_file))
            return
        serve_forever(port)  # hypercorn logs "Running on http://127.0.0.1:PORT" to stderr


@local.command("down")
@click.option("--pidfile", type=FILE, default=PIDFILE, show_default=True)
def down(pidfile: Path) -> None:
    """Stop emulators started with `up --detach`."""
    with _one_line_errors():
        click.echo("stopped" if stop_detached(pidfile) else "not running")


@local.command("demo-setup")
@_endpoint_option
@click.option("--table", required=True, help="DynamoDB table to create (stream NEW_AND_OLD_IMAGES); kept if it exists.")
@click.option("--stream", required=True, help="Kinesis stream to create; kept if it exists.")
@click.option("--shards", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--hash-key", default="pk:S", show_default=True, callback=_key_attribute, help="NAME:TYPE, TYPE S|N|B.")
@click.option("--range-key", default=None, callback=_key_attribute, help="NAME:TYPE, optional.")
@click.option("--writes", type=click.IntRange(0), default=100, show_default=True, help="PutItem calls.")
@click.option("--updates", type=click.IntRange(0), default=50, show_default=True, help="UpdateItem calls.")
@click.option("--deletes", type=click.IntRange(0), default=20, show_default=True, help="DeleteItem calls.")
@click.option("--keys", type=click.IntRange(1), default=100, show_default=True, help="Distinct item keys.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_setup(
    endpoint_url: str,
    table: str,
    stream: str,
    shards: int,
    hash_key: tuple[str, str],
    range_key: tuple[str, str] | None,
    writes: int,
    updates: int,
    deletes: int,
    keys: int,
    seed: int,
) -> None:
    """Create a table and a Kinesis stream, then write a small seeded workload of item changes."""
    with _one_line_errors():
        ddb = aws_client("dynamodb", endpoint_url)
        create_table(ddb, table, (hash_key, range_key) if range_key else (hash_key,), exist_ok=True)
        create_stream(aws_client("kinesis", endpoint_url), stream, shards, exist_ok=True)
        counts = run_workload(ddb, table, writes, updates, deletes, seed=seed, n_keys=keys)
        click.echo(
            f"table {table}: {counts.puts} puts, {counts.updates} updates, {counts.deletes} deletes -> "
            f"{counts.inserts} INSERT, {counts.modifies} MODIFY, {counts.removes} REMOVE; stream {stream} ready"
        )


@local.command("pump")
@_endpoint_option
@click.option("--table", required=True, help="DynamoDB table whose stream to read (enabled if off).")
@click.option("--stream", required=True, help="Kinesis stream to put the records into.")
@click.option("--follow", is_flag=True, help="Keep pumping new changes until Ctrl+C or SIGTERM.")
@click.option("--interval", type=click.FloatRange(0.01), default=0.5, show_default=True, help="Idle poll, seconds.")
@click.option(
    "--state-file",
    type=FILE,
    help="Resume from and save to this file, so that a second run does not put records again.",
)
def pump(endpoint_url: str, table: str, stream: str, follow: bool, interval: float, state_file: Path | None) -> None:
    """Republish the table's DynamoDB stream into Kinesis as "Kinesis Data Streams for DynamoDB" records."""
    with _one_line_errors():
        state = PumpState.from_json(state_file.read_text()) if state_file and state_file.exists() else None
        stream_pump = StreamPump(PumpClients.for_endpoint(endpoint_url), table, stream, state=state)

        def save(_put: int = 0) -> None:
            if state_file:
                state_file.write_text(stream_pump.state.to_json())

        if follow:
            stop = StopFlag()  # not a threading.Event: its set() could block inside a signal handler
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            put = stream_pump.follow(stop, interval, on_put=save)
        else:
            put = stream_pump.pump_available()
            save()
        click.echo(f"put {put} records into {stream}")
