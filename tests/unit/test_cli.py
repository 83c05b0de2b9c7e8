"""The command line through click's CliRunner: help, one-line usage errors, file replays into SQLite, queries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import ChangeEvent
from kcl_relay.cli import EMBEDDED_DEFAULT, TARGET_ENV, cli
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.source.replay import read_records
from kcl_relay.source.url import OPTIONS, describe_options
from tests.support.corpus import KEY_TYPES, make_corpus, write_ndjson
from tests.support.reference import reference_state
from tests.support.tables import read_items

ORDERS = [
    {
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "tableName": "orders",
        "dynamodb": {
            "ApproximateCreationDateTime": 1735689600000 + i,
            "ApproximateCreationDateTimePrecision": "MILLISECOND",
            "Keys": {"id": {"S": ident}},
            "NewImage": {"id": {"S": ident}, "n": {"N": str(i)}, "tags": {"SS": ["x", "y"]}},
        },
    }
    for i, ident in enumerate(("a", "b", "c"), start=1)
]


@pytest.fixture(autouse=True)
def no_target_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TARGET_ENV, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="kcl-relay", env=env)


def assert_usage_error(result: Result, needle: str = "") -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kcl-relay: error: ")
    assert needle in lines[0]
    assert result.stdout == ""
    return lines[0]


def decoded_events(path: Path) -> list[ChangeEvent]:
    events = []
    for record in read_records(path):
        try:
            events.append(decode(record))
        except DecodeError:
            continue
    return events


@pytest.fixture
def orders_file(tmp_path: Path) -> Path:
    return write_ndjson(tmp_path / "orders.ndjson", ORDERS)


@pytest.fixture
def loaded_db(tmp_path: Path, orders_file: Path) -> str:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    result = run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}", "--target", url, "--table", "t")
    assert result.exit_code == 0, result.output
    return url


# ---- help -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ((), ["load", "run", "shell", "show", "local", "--version"]),
        (("load",), ["table"]),
        (("load", "table"), ["SOURCE", "--target", "--table", "kinesis+dynamodb+cdc://"]),
        (("run",), ["--properties", "--target", "--table", "--reset", "--worker-id"]),
        (("shell",), ["--command", "--target"]),
        (("show",), ["table"]),
        (("show", "table"), ["SCHEMA.TABLE", "--target"]),
        (("local",), []),
    ],
)
def test_help(args: tuple[str, ...], needles: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = run(*args, flag)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Usage: kcl-relay")
        for needle in needles:
            assert needle in result.stdout


def test_load_table_help_lists_every_source_option_with_its_default() -> None:
    result = run("load", "table", "--help")
    assert result.exit_code == 0
    assert "Source options (?name=value&...):" in result.stdout
    lines = [line.strip() for line in result.stdout.splitlines()]
    for line in describe_options().splitlines():
        assert line in lines, f"--help lost or rewrapped {line!r}"
    for name in OPTIONS:
        assert any(line.startswith(f"{name}: ") for line in lines)
    assert "batch-size: records per database batch (not per GetRecords) (default 100)" in lines
    assert any(line.startswith("ttl: ") and line.endswith("(default delete)") for line in lines)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "version" in result.stdout


# ---- usage errors: one line, exit code 2 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("https://aws/stream", "must start with kinesis+dynamodb+cdc://"),
        ("kinesis+dynamodb+cdc://aws", "names no stream"),
        ("kinesis+dynamodb+cdc://localhost:port/s", "bad port"),
        ("kinesis+dynamodb+cdc://aws/s?batchsize=5", "unknown source option 'batchsize' (did you mean batch-size?)"),
        ("kinesis+dynamodb+cdc://aws/s?batch-size=0", "bad value '0' for source option 'batch-size'"),
        ("kinesis+dynamodb+cdc://aws/s?ttl=keep", "source option 'ttl'"),
        ("kinesis+dynamodb+cdc://aws/s?start=seqno-at", "needs seqno="),
    ],
)
def test_bad_source(source: str, needle: str) -> None:
    assert_usage_error(run("load", "table", source, "--target", "sqlite:///x.db", "--table", "t"), needle)


def test_bad_source_never_echoes_credentials() -> None:
    line = assert_usage_error(run("load", "table", "kinesis+dynamodb+cdc://AKID:s3cretKEY@localhost:x/s"), "bad port")
    assert "s3cretKEY" not in line


@pytest.mark.parametrize(
    ("target", "table", "expected"),
    [
        ("postgresql://relay@localhost/db", None, "public.orders"),
        ("sqlite:///x.db", None, "orders"),
        ("crate://localhost:4200", None, "doc.orders"),
        ("crate://localhost:4200/s", None, "s.orders"),
        ("crate://localhost:4200/s/t", None, "s.t"),  # the URL names a table: it wins over the default
        ("sqlite:///x.db", "other", "other"),
    ],
)
def test_the_default_table_holds_with_an_explicit_target(target: str, table: str | None, expected: str) -> None:
    """docs/full-load.md: "The default target table is the DynamoDB table's name", --target given or not."""
    from kcl_relay.cli import resolve_target

    assert resolve_target(target, table, "orders").qualified_table == expected


def test_an_explicit_target_without_table_gets_the_default_table(tmp_path: Path, orders_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    result = run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}", "--target", url)
    assert result.exit_code == 0, result.output
    assert len(read_items(parse_target(url, "orders"), {"id": "S"})) == 3


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("crate://localhost:4200/doc/t?sslx=true", "unknown option 'sslx' for a crate:// target (did you mean ssl?)"),
        ("crate://localhost:4200/doc/t?ssl=maybe", "bad value 'maybe' for target option 'ssl': expected true or false"),
        ("crate://localhost:4200/doc/t?ssl=true&ssl=false", "target option 'ssl' is given twice"),
        ("sqlite:///x.db?foo=1", "unknown option 'foo' for a sqlite:// target"),
        ("postgresql://relay@localhost/db?sslmode=maybe", "bad value 'maybe' for target option 'sslmode'"),
    ],
)
def test_bad_target_options_stop_before_anything_starts(target: str, needle: str, orders_file: Path) -> None:
    for args in (
        ["load", "table", f"kinesis+dynamodb+cdc://{orders_file}", "--target", target, "--table", "t"],
        ["shell", "--command", "SELECT 1", "--target", target],
        ["redrive", "--target", target, "--table", "t"],
    ):
        assert_usage_error(run(*args), needle)


@pytest.mark.parametrize(
    ("target", "needle"),
    [("mysql://x@localhost/db", "unsupported target 'mysql://'"), ("sqlite://", "must name a database file")],
)
def test_bad_target(target: str, needle: str) -> None:
    result = run("load", "table", "kinesis+dynamodb+cdc://aws/s", "--target", target, "--table", "t")
    assert_usage_error(result, needle)


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    result = run(
        "load",
        "table",
        f"kinesis+dynamodb+cdc://{missing}",
        "--target",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--table",
        "t",
    )
    assert_usage_error(result, f"replay file not found: {missing}")
    assert not (tmp_path / "x.db").exists(), "nothing started"


def test_run_with_a_missing_properties_file(tmp_path: Path) -> None:
    assert_usage_error(run("run", "--properties", str(tmp_path / "nope.properties")), "properties file not found")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("applicationName = app\n", "names no streamName"),
        ("streamName = s\n", "names no applicationName"),
        ("streamName = s\napplicationName = app\nkclrelay.ttl = keep\n", "line 3: bad value 'keep' for kclrelay.ttl"),
        ("streamName = s\napplicationName = app\nkclrelay.nope = 1\n", "line 3: unknown key kclrelay.nope"),
        ("streamName = s\napplicationName = app\nmaxRecords = many\n", "maxRecords"),
        ("streamName = s\napplicationName = app\nmaxRecords = 10001\n", "maxRecords"),
        (
            "streamName = s\napplicationName = app\nconsumerName = mine\n",
            "line 3: consumerName is fanoutConfig.consumerName in KCL 3.1.3 (at top level the KCL ignores it)",
        ),
        (
            "streamName = s\napplicationName = app\nfanoutConfig.consumerNme = mine\n",
            "did you mean fanoutConfig.consumerName?",
        ),
    ],
)
def test_run_with_a_bad_properties_file(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "kcl.properties"
    path.write_text(content)
    assert_usage_error(run("run", "--properties", str(path), "--target", "sqlite:///x.db", "--table", "t"), needle)


@pytest.mark.parametrize("template", sorted((Path(__file__).parents[2] / "properties").glob("*.properties")))
def test_check_passes_the_templates_with_one_line(template: Path) -> None:
    result = run("check", "--properties", str(template))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{template}: ok (stream ") and "KCL keys" in lines[0]
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            "streamName = s\napplicationName = app\nconsumerArn = arn:x\n",
            "line 3: consumerArn is fanoutConfig.consumerArn in KCL 3.1.3 (at top level the KCL ignores it)",
        ),
        ("streamName = s\napplicationName = app\nMaxRecords = 10\n", "line 3: unknown key MaxRecords; did you mean"),
        ("streamName = s\napplicationName = app\nkclrelay.ttl = keep\n", "line 3: bad value 'keep' for kclrelay.ttl"),
        ("applicationName = app\n", "names no streamName"),
    ],
)
def test_check_says_what_run_would_stop_with(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "kcl.properties"
    path.write_text(content)
    assert_usage_error(run("check", "--properties", str(path)), needle)
    assert_usage_error(run("check", "--properties", str(tmp_path / "nope.properties")), "properties file not found")


def test_run_worker_id_and_reset_flags_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kcl_relay import relay

    seen: list[tuple[Any, dict[str, str]]] = []
    monkeypatch.setattr(relay, "run_stream", lambda spec, _target, props: seen.append((spec, props)) or 0)
    path = tmp_path / "kcl.properties"
    path.write_text("streamName = s\napplicationName = app\nworkerIdentifier = from-file\n")
    args = ["run", "--properties", str(path), "--target", "sqlite:///x.db", "--table", "t"]
    assert run(*args).exit_code == 0
    assert run(*args, "--worker-id", "host-orders", "--reset").exit_code == 0
    (plain, _), (flagged, flagged_props) = seen
    assert plain.worker_id == "from-file" and not plain.reset
    assert flagged.worker_id == "host-orders" and flagged.reset
    assert flagged_props["workerId"] == "host-orders" and "workerIdentifier" not in flagged_props


# ---- replay into SQLite ---------------------------------------------------------------------------------------


def test_replay_of_a_file_into_sqlite(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "x.ndjson", make_corpus(300, seed=11))
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    result = run("load", "table", f"kinesis+dynamodb+cdc://{path}?batch-size=17", "--target", url, "--table", "t")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "replayed 300 records from" in result.stderr
    items = read_items(parse_target(url, "t"), KEY_TYPES)
    assert items and items == reference_state(decoded_events(path))


def test_a_replay_of_a_handful_of_records_prints_no_rate(tmp_path: Path, orders_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    result = run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}", "--target", url, "--table", "t")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if "replayed" in line]
    assert re.fullmatch(
        rf"kcl-relay: replayed 3 records from {re.escape(str(orders_file))} in \d+\.\d\d s: 3 upserts, 0 deletes, "
        "0 stale, 0 ttl ignored, 0 dead letters",
        line,
    ), line  # it said "in 0.11 s (27/s)" for 3 records


def test_replay_into_a_target_that_fails_exits_1(tmp_path: Path, orders_file: Path) -> None:
    import sqlite3

    database = tmp_path / "target.db"
    with sqlite3.connect(database) as connection:  # reachable, but "t" is not our table: every write fails
        connection.execute("CREATE TABLE t (unrelated INTEGER)")
    # A table of another shape is waited for like an outage (someone may restore it): retry-timeout bounds the wait.
    source = f"kinesis+dynamodb+cdc://{orders_file}?retry-timeout=1"
    result = run("load", "table", source, "--target", f"sqlite:///{database}", "--table", "t")
    assert result.exit_code == 1
    assert "kcl-relay: error: the target failed after 0 records" in result.stderr


def test_replay_into_an_unopenable_target_stops_before_anything_starts(tmp_path: Path, orders_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    result = run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}", "--target", url, "--table", "t")
    assert_usage_error(result, "cannot reach the target sqlite table t")


def test_replay_with_the_target_from_the_environment(tmp_path: Path, orders_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}", "--table", "t", env={TARGET_ENV: url})
    assert result.exit_code == 0, result.output
    assert "embedded default" not in result.stderr
    assert set(read_items(parse_target(url, "t"), {"id": "S"})) == {'{"id":"a"}', '{"id":"b"}', '{"id":"c"}'}


def test_embedded_default(tmp_path: Path, orders_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}")
    assert result.exit_code == 0, result.output
    assert (
        f"kcl-relay: no --target and no {TARGET_ENV}: using the embedded default {EMBEDDED_DEFAULT} (table orders)"
        in result.stderr.splitlines()
    )
    database = tmp_path / "kcl-relay.sqlite"
    assert database.is_file()
    spec: TargetSpec = parse_target(f"sqlite:///{database}", "orders")
    assert len(read_items(spec, {"id": "S"})) == 3


# ---- shell and show table -------------------------------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_shell_prints_json_lines(loaded_db: str) -> None:
    result = run("shell", "--command", "SELECT pk, data, cdc_event FROM t ORDER BY pk", "--target", loaded_db)
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout) == [
        {"pk": {"id": "a"}, "data": {"n": 1, "tags": ["x", "y"]}, "cdc_event": "INSERT"},
        {"pk": {"id": "b"}, "data": {"n": 2, "tags": ["x", "y"]}, "cdc_event": "INSERT"},
        {"pk": {"id": "c"}, "data": {"n": 3, "tags": ["x", "y"]}, "cdc_event": "INSERT"},
    ]
    assert result.stderr.splitlines() == ["(3 rows)"]


def test_shell_with_a_statement_without_rows(loaded_db: str) -> None:
    result = run("shell", "--command", 'DELETE FROM t WHERE pk = \'{"id":"a"}\'', "--target", loaded_db)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "(1 row affected)\n"  # the database's count, not the rows printed
    count = run("shell", "--command", "SELECT count(*) AS n FROM t", "--target", loaded_db)
    assert json_lines(count.stdout) == [{"n": 2}]


def test_shell_sql_error_is_one_line(loaded_db: str) -> None:
    result = run("shell", "--command", "SELECT * FROM no_such_table", "--target", loaded_db)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["kcl-relay: error: no such table: no_such_table"]


def test_shell_takes_the_target_from_the_environment(loaded_db: str) -> None:
    result = run("shell", "--command", "SELECT count(*) AS n FROM t", env={TARGET_ENV: loaded_db})
    assert result.exit_code == 0
    assert json_lines(result.stdout) == [{"n": 3}]


def test_shell_and_show_table_use_the_embedded_default_like_load_table(
    tmp_path: Path, orders_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("load", "table", f"kinesis+dynamodb+cdc://{orders_file}").exit_code == 0
    count = run("shell", "--command", "SELECT count(*) AS n FROM orders")
    assert count.exit_code == 0, count.output
    assert json_lines(count.stdout) == [{"n": 3}]
    assert len(json_lines(run("show", "table", "orders").stdout)) == 3


def test_show_table_prints_items_key_first_in_key_order(loaded_db: str) -> None:
    result = run("show", "table", "t", "--target", loaded_db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(",")[0] for line in lines] == ['{"id":"a"', '{"id":"b"', '{"id":"c"']  # the key first
    first = json.loads(lines[0])
    assert list(first) == ["id", "n", "tags", "_cdc"]
    assert first["n"] == 1 and first["tags"] == ["x", "y"]
    assert first["_cdc"]["event"] == "INSERT" and first["_cdc"]["version"].endswith("+00:00")
    assert result.stderr.splitlines() == ['(3 rows, ordered by "pk")']


def test_show_table_raw_and_limit_say_when_they_cut(loaded_db: str) -> None:
    result = run("show", "table", "t", "--target", loaded_db, "--raw", "--limit", "2")
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    assert [row["pk"]["id"] for row in rows] == ["a", "b"]
    assert set(rows[0]) == {"pk", "data", "aux", "cdc_version", "cdc_order", "cdc_event"}
    assert result.stderr.splitlines() == ['(first 2 of 3 rows, ordered by "pk"; --limit N shows more)']


def test_show_table_with_a_schema_name_on_sqlite(loaded_db: str) -> None:
    result = run("show", "table", "main.t", "--target", loaded_db)
    assert result.exit_code == 0, result.output
    assert len(json_lines(result.stdout)) == 3


def test_show_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text(json.dumps(ORDERS[0]) + "\nnot json\n")
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    assert run("load", "table", f"kinesis+dynamodb+cdc://{path}", "--target", url, "--table", "t").exit_code == 0
    result = run("show", "table", "t__deadletters", "--target", url)
    assert result.exit_code == 0, result.output
    (letter,) = json_lines(result.stdout)
    assert letter["raw"] == "not json"
    assert letter["reason"].startswith("undecodable: not JSON")
    assert (letter["shard_id"], letter["sequence_number"]) == ("file:bad.ndjson", "2")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_target_stops_before_anything_starts_without_showing_the_password(tmp_path: Path) -> None:
    url = f"postgresql://relay:hunter2-secret@127.0.0.1:{free_port()}/db"
    for source in (f"kinesis+dynamodb+cdc://127.0.0.1:{free_port()}/s", f"kinesis+dynamodb+cdc://{tmp_path}/x.ndjson"):
        if "ndjson" in source:
            (tmp_path / "x.ndjson").write_text("{}\n")
        line = assert_usage_error(run("load", "table", source, "--target", url, "--table", "t"), "cannot reach")
        assert "hunter2-secret" not in line and "***" in line


def test_unreachable_aws_endpoint_stops_before_anything_starts(tmp_path: Path) -> None:
    from kcl_relay.kcl.daemon import SetupError, find_jars, find_java

    try:
        find_java(), find_jars()
    except SetupError as missing:
        pytest.skip(f"the endpoint is checked after Java and the jars: {missing}")
    port = free_port()
    result = run(
        "load",
        "table",
        f"kinesis+dynamodb+cdc://k:s@127.0.0.1:{port}/s",
        "--target",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--table",
        "t",
    )
    assert assert_usage_error(result) == (
        f"kcl-relay: error: cannot reach the AWS endpoint http://127.0.0.1:{port} (region us-east-1)"
    )


def test_rows_with_timestamps_bytes_and_uuids_print_as_json() -> None:
    import datetime
    import uuid

    from kcl_relay.cli import _json_object, _plain

    moment = datetime.datetime(2026, 11, 27, 5, 0, tzinfo=datetime.timezone.utc)
    row = [("at", moment), ("raw", b"\x00\x01"), ("id", uuid.UUID(int=5))]
    assert json.loads(_json_object([(name, _plain(value)) for name, value in row])) == {
        "at": "2026-11-27T05:00:00+00:00",
        "raw": "AAE=",
        "id": "00000000-0000-0000-0000-000000000005",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["load", "table", "--help"],
        ["run", "--help"],
        ["load", "table", "kinesis+dynamodb+cdc://aws/s?batch-size=0"],
        ["load", "table", "kinesis+dynamodb+cdc://aws/s?nope=1"],
        ["status", "--help"],
        ["status", "kinesis+dynamodb+cdc://aws/s?nope=1"],
        ["check", "--properties", str(Path(__file__).parents[2] / "properties" / "aws.properties")],
    ],
)
def test_help_and_bad_input_never_import_boto3_sqlalchemy_or_the_emulators(args: list[str]) -> None:
    # What makes `--help` and a bad option answer in a fraction of a second: none of the heavy imports happen.
    code = (
        "import sys\n"
        "from kcl_relay.cli import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='kcl-relay')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'sqlalchemy', 'moto', 'hypercorn', 'prometheus_client')"
        " if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY:\n" in done.stderr, done.stdout + done.stderr


def test_local_stays_a_working_command_group() -> None:
    result = run("local", "--help")
    assert result.exit_code == 0
    assert "up" in result.stdout and "Local AWS emulators" in result.stdout
