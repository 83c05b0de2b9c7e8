"""`load table dynamodb://...` and `verify` on the command line: help, and one-line errors before anything starts."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner, Result

from kcl_relay.cli import TARGET_ENV, cli
from kcl_relay.source.table_url import STREAM_PASSTHROUGH, TABLE_OPTIONS


@pytest.fixture(autouse=True)
def no_target_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TARGET_ENV, raising=False)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="kcl-relay")


def assert_usage_error(result: Result, needle: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("kcl-relay: no --target")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("kcl-relay: error: ") and needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_shows_both_url_kinds_and_every_table_option() -> None:
    result = run("load", "table", "--help")
    assert result.exit_code == 0
    assert "dynamodb://[KEY:SECRET@]HOST[:PORT]/TABLE[?options]" in result.stdout
    for name in [*TABLE_OPTIONS, *STREAM_PASSTHROUGH]:
        assert f"{name}: " in result.stdout
    verify_help = run("verify", "--help")
    assert verify_help.exit_code == 0
    for option in ("--sample", "--settle", "--show", "--json", "--target", "--table"):
        assert option in verify_help.stdout


@pytest.mark.parametrize("command", [("load", "table"), ("verify",)])
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("dynamodb://aws/orders?segments=0", "bad value '0' for table option 'segments'"),
        ("dynamodb://aws/orders?once=true", "need stream=STREAM"),
        ("dynamodb://aws/orders?stream=s&start=latest", "the full load decides it"),
        ("dynamodb://KEY:SE/CRET@host/orders", "URL-encoded"),
    ],
)
def test_bad_table_urls(command: tuple[str, ...], url: str, needle: str, tmp_path: object) -> None:
    line = assert_usage_error(run(*command, url, "--target", "sqlite:////tmp/never.db", "--table", "t"), needle)
    assert "CRET" not in line


@pytest.mark.parametrize("command", [("load", "table"), ("verify",)])
def test_an_unreachable_dynamodb_endpoint_is_one_line(command: tuple[str, ...], tmp_path: object) -> None:
    url = f"dynamodb://test:test@127.0.0.1:{closed_port()}/orders"
    assert_usage_error(run(*command, url, "--target", "sqlite:////tmp/never.db", "--table", "t"), "cannot reach")


def test_verify_sample_must_be_a_fraction() -> None:
    result = run("verify", "dynamodb://aws/orders", "--sample", "1.5", "--target", "sqlite:////tmp/x.db")
    assert result.exit_code == 2 and "--sample" in result.stderr
