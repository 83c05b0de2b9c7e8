"""The one table of options (kcl_relay/options.py): every default, help text and doc row comes from it or agrees."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from kcl_relay import options
from kcl_relay.cli import cli
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.properties import (
    KCL_TO_OPTION,
    RELAY_KEYS,
    is_kcl_key,
    read_properties,
    read_properties_file,
    spec_from_properties,
)
from kcl_relay.kcl.worker_id import stable_worker_id
from kcl_relay.options import SCOPES, SOURCE_OPTIONS, TABLE_OPTIONS
from kcl_relay.pipeline import PipelineOptions
from kcl_relay.redrive import _Settings
from kcl_relay.sink.retry import RetryPolicy
from kcl_relay.sink.writer import DEFAULT_TOMBSTONE_RETENTION
from kcl_relay.source.table_url import TableSpec, parse_table
from kcl_relay.source.url import SourceError, SourceSpec, parse_source

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "options.md"


def _defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING and f.init}


@pytest.mark.parametrize(
    ("cls", "table"),
    [
        (SourceSpec, SOURCE_OPTIONS),
        (TableSpec, TABLE_OPTIONS),
        (ProcessorConfig, SOURCE_OPTIONS),
        (PipelineOptions, SOURCE_OPTIONS),
        (_Settings, SOURCE_OPTIONS),
    ],
)
def test_every_settings_class_takes_the_tables_defaults(cls: type, table: dict[str, options.Option]) -> None:
    by_attr = {option.attr: option for option in table.values()}
    defaults = _defaults(cls)
    shared = set(defaults) & set(by_attr)
    assert shared, f"{cls.__name__} shares no field with the table"
    for attr in shared:
        assert defaults[attr] == by_attr[attr].default, f"{cls.__name__}.{attr} drifted from the table"


def test_every_source_option_is_a_source_spec_field_and_every_table_option_a_table_spec_field() -> None:
    assert {o.attr for o in SOURCE_OPTIONS.values()} <= set(_defaults(SourceSpec))
    assert {o.attr for o in TABLE_OPTIONS.values()} <= {f.name for f in dataclasses.fields(TableSpec)}


def test_the_sinks_constants_are_the_tables() -> None:
    assert DEFAULT_TOMBSTONE_RETENTION.total_seconds() == SOURCE_OPTIONS["tombstone-retention"].default
    assert RetryPolicy().timeout == SOURCE_OPTIONS["retry-timeout"].default


def test_an_empty_url_gives_the_tables_defaults() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://aws/s")
    for option in SOURCE_OPTIONS.values():
        assert getattr(spec, option.attr) == option.default, option.name
    table = parse_table("dynamodb://aws/table")
    for option in TABLE_OPTIONS.values():
        assert getattr(table, option.attr) == option.default, option.name


def test_every_option_has_a_scope_help_and_a_parser_that_takes_its_default() -> None:
    for option in [*SOURCE_OPTIONS.values(), *TABLE_OPTIONS.values()]:
        assert option.scope in SCOPES, option.name
        assert option.help and not option.help.endswith("."), option.name
        if option.default is not None and option.name != "mapping":
            shown = str(option.default).lower() if isinstance(option.default, bool) else str(option.default)
            assert option.parse(shown) == option.default, option.name


def _doc_rows() -> dict[str, list[str]]:
    """docs/options.md's option table: name -> its cells."""
    text = DOC.read_text()
    start = text.index("| option | default | KCL property |")
    rows: dict[str, list[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|", 3)]
        rows[cells[0].strip("`")] = cells
    return rows


def test_the_docs_table_lists_every_option_with_the_tables_default_and_kcl_key() -> None:
    rows = _doc_rows()
    assert set(rows) == set(SOURCE_OPTIONS), set(rows) ^ set(SOURCE_OPTIONS)
    for name, option in SOURCE_OPTIONS.items():
        _name, default, kcl_key = rows[name][:3]
        assert default == option.default_in_docs(), f"docs/options.md: the default of {name}"
        assert kcl_key.strip("`") == (option.kcl_key or ""), f"docs/options.md: the KCL property of {name}"


def test_the_properties_reader_knows_every_option_and_its_kcl_keys() -> None:
    assert set(SOURCE_OPTIONS) <= set(RELAY_KEYS)
    for key, (name, _convert) in KCL_TO_OPTION.items():
        assert name in SOURCE_OPTIONS, key
    for option in SOURCE_OPTIONS.values():
        if option.kcl_key and option.name != "dynamodb-endpoint":  # the KCL reads that key itself, as written
            assert KCL_TO_OPTION[option.kcl_key][0] == option.name


@pytest.mark.parametrize("template", sorted((REPO / "properties").glob("*.properties")), ids=lambda p: p.name)
def test_every_kclrelay_key_of_a_template_is_an_option(template: Path) -> None:
    keys = [key[len("kclrelay.") :] for key in read_properties(template) if key.startswith("kclrelay.")]
    assert keys
    # also those named in comments and the commented-out settings a user may uncomment
    text = template.read_text()
    keys += re.findall(r"kclrelay\.([a-z][a-z-]*[a-z])", text)
    for key in keys:
        assert key in RELAY_KEYS, f"{template.name}: kclrelay.{key}"
    for key in re.findall(r"^#([A-Za-z][\w.]*)\s*=", text, flags=re.M):  # `#key = value`: one to uncomment
        assert key.startswith("kclrelay.") or is_kcl_key(key), f"{template.name}: #{key}"


def test_the_help_of_worker_id_says_what_the_code_does(tmp_path: Path) -> None:
    assert stable_worker_id(tmp_path, host="host") == "host-0"
    option = SOURCE_OPTIONS["worker-id"]
    assert "HOSTNAME-SLOT" in option.help and "random" not in option.help
    assert option.default_in_docs() == "`HOSTNAME-SLOT`"


def test_the_run_commands_flags_come_from_the_table() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=1000)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for option in SOURCE_OPTIONS.values():
        if option.cli:
            assert re.search(rf"{option.cli}\b", text), option.cli
            assert option.help.split(";")[0].split(" (")[0].lower() in text.lower(), option.cli


# ---- a properties file is read into the settings directly, in its own words (no URL, no rewriting) ---------------

HEAD = "streamName = {stream}\napplicationName = relay-app\n"


def _error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "orders.properties"
    path.write_text(text)
    with pytest.raises(SourceError) as error:
        spec_from_properties(read_properties_file(path))
    return str(error.value).removeprefix(f"{path}")


def test_a_value_that_looks_like_an_option_is_quoted_as_written(tmp_path: Path) -> None:
    message = _error_of(tmp_path, HEAD.format(stream="start=latest"))
    assert message == ": bad stream name 'start=latest': 1-128 of a-z A-Z 0-9 _ . -"


def test_a_combination_names_the_keys_the_file_used(tmp_path: Path) -> None:
    text = HEAD.format(stream="orders") + "kclrelay.route-tables = true\nkclrelay.source-table = orders\n"
    message = _error_of(tmp_path, text)
    assert message == ": kclrelay.route-tables = true and kclrelay.source-table exclude each other"


def test_a_bad_endpoint_port_is_said_in_the_files_words(tmp_path: Path) -> None:
    message = _error_of(tmp_path, HEAD.format(stream="orders") + "kinesisEndpoint = http://localhost:port\n")
    assert message == " line 3: kinesisEndpoint has a bad port: 'http://localhost:port'"


def test_properties_and_url_give_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "orders.properties"
    path.write_text(
        HEAD.format(stream="orders")
        + "regionName = eu-west-1\nfailoverTimeMillis = 2500\nkclrelay.batch-size = 7\nkclrelay.ttl = ignore\n"
        + "kclrelay.start = seqno-after\nkclrelay.seqno = 42\nkinesisEndpoint = https://kinesis.example:8443\n"
    )
    spec, _, _ = spec_from_properties(read_properties_file(path))
    url = parse_source(
        "kinesis+dynamodb+cdc://kinesis.example:8443/orders?region=eu-west-1&failover-time=2.5&batch-size=7"
        "&ttl=ignore&start=seqno-after&seqno=42&app=relay-app"
    )
    assert spec == dataclasses.replace(url, endpoint_url="https://kinesis.example:8443")
    assert spec.from_properties


def test_the_choices_agree_with_the_modules_that_act_on_them() -> None:
    from kcl_relay import logs
    from kcl_relay.sink import dialect

    assert options.DELETE_MODES == dialect.DELETE_MODES  # not imported by options: --help stays fast
    assert options.LOG_LEVELS == logs.LOG_LEVELS


def test_the_workers_and_writers_parameters_default_to_the_table() -> None:
    import inspect

    from kcl_relay.kcl.daemon import Daemon
    from kcl_relay.kcl.processor import configure_logging
    from kcl_relay.kcl.supervisor import WorkerPlan
    from kcl_relay.sink.writer import TableWriter

    def default_of(function: object, name: str) -> object:
        return inspect.signature(function).parameters[name].default  # type: ignore[arg-type]

    assert default_of(TableWriter, "delete_mode") == SOURCE_OPTIONS["delete-mode"].default
    assert default_of(Daemon, "log_level") == SOURCE_OPTIONS["log-level"].default
    assert default_of(configure_logging, "level") == SOURCE_OPTIONS["log-level"].default
    assert _defaults(WorkerPlan)["metrics_host"] == SOURCE_OPTIONS["metrics-host"].default


def test_the_full_load_docs_table_lists_every_table_option_with_its_default() -> None:
    from kcl_relay.source.table_url import STREAM_PASSTHROUGH

    text = (REPO / "docs" / "full-load.md").read_text()
    start = text.index("| option | default | effect |")
    rows: dict[str, str] = {}
    passthrough: list[str] = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        names, default = (cell.strip() for cell in line.strip().strip("|").split("|", 2)[:2])
        if "," in names:
            passthrough = [name.strip().strip("`") for name in names.split(",")]
        else:
            rows[names.strip("`")] = default
    assert set(rows) == set(TABLE_OPTIONS), set(rows) ^ set(TABLE_OPTIONS)
    for name, option in TABLE_OPTIONS.items():
        assert rows[name] == option.default_in_docs(), f"docs/full-load.md: the default of {name}"
    assert passthrough == list(STREAM_PASSTHROUGH)
