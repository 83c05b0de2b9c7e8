"""parse_table: the full load's dynamodb:// URL: hosts, credentials, every option, the stream side, --help text."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kcl_relay.source.table_url import (
    DECIDED,
    STREAM_PASSTHROUGH,
    TABLE_OPTIONS,
    TableSpec,
    describe_table_options,
    is_table_url,
    parse_table,
)
from kcl_relay.source.url import SourceError

BASE = "dynamodb://aws/orders"


def error_of(url: str) -> str:
    with pytest.raises(SourceError) as caught:
        parse_table(url)
    message = str(caught.value)
    assert "\n" not in message, "one line"
    return message


def test_defaults() -> None:
    spec = parse_table(BASE)
    assert spec == TableSpec(table="orders")
    assert (spec.region, spec.segments, spec.consistent_read, spec.page_size, spec.batch_size) == (
        "us-east-1",
        4,
        False,
        None,
        500,
    )
    assert spec.prune and spec.stream is None and spec.endpoint_url is None


def test_scheme_is_recognised() -> None:
    assert is_table_url(BASE)
    assert not is_table_url("kinesis+dynamodb+cdc://aws/stream")
    assert "must start with dynamodb://" in error_of("dynamo://aws/orders")


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("dynamodb://aws/t01", None),
        ("dynamodb://localhost:4566/t01", "http://localhost:4566"),
        ("dynamodb://127.0.0.1/t01", "http://127.0.0.1"),
        ("dynamodb://[::1]:8000/t01", "http://[::1]:8000"),
    ],
)
def test_hosts(url: str, endpoint: str | None) -> None:
    assert parse_table(url).endpoint_url == endpoint


def test_credentials_are_kept_but_never_shown() -> None:
    spec = parse_table("dynamodb://AKIAEXAMPLE:s%2Fecr%40et@localhost:4566/orders")
    assert spec.credentials is not None
    assert (spec.credentials.access_key_id, spec.credentials.secret_access_key) == ("AKIAEXAMPLE", "s/ecr@et")
    assert "s/ecr@et" not in repr(spec)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("dynamodb://KEY:se/cret@localhost/orders", "must be URL-encoded"),
        ("dynamodb://KEY@localhost/orders", "KEY:SECRET"),
        ("dynamodb://:secret@localhost/orders", "KEY:SECRET"),
        ("dynamodb:///orders", "names no host"),
        ("dynamodb://aws/", "names no table"),
        ("dynamodb://aws/a", "bad table name"),
        ("dynamodb://aws/ta ble", "bad table name"),
        ("dynamodb://aws/orders#frag", "#fragment"),
        ("dynamodb://localhost:99999/orders", "bad port"),
    ],
)
def test_bad_urls(url: str, needle: str) -> None:
    message = error_of(url)
    assert needle in message
    assert "cret" not in message and "secret" not in message.replace("KEY:SECRET", "")


@pytest.mark.parametrize(
    ("query", "field", "value"),
    [
        ("region=eu-central-1", "region", "eu-central-1"),
        ("segments=16", "segments", 16),
        ("segments=1", "segments", 1),
        ("consistent-read=true", "consistent_read", True),
        ("page-size=25", "page_size", 25),
        ("batch-size=1000", "batch_size", 1000),
        ("prune=false", "prune", False),
        ("tombstone-retention=7200", "tombstone_retention", 7200.0),
        ("delete-mode=soft", "delete_mode", "soft"),
        ("stream=orders-cdc", "stream_name", "orders-cdc"),
    ],
)
def test_options(query: str, field: str, value: object) -> None:
    assert getattr(parse_table(f"{BASE}?{query}"), field) == value


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("segments=0", "from 1 to 100"),
        ("segments=101", "from 1 to 100"),
        ("consistent-read=maybe", "true or false"),
        ("page-size=-1", "whole number"),
        ("batch-size=x", "batch-size"),
        ("region=Mars", "AWS region"),
        ("tombstone-retention=30", "at least 3600 seconds"),
        ("stream=bad name", "Kinesis stream name"),
        ("bogus=1", "unknown table option 'bogus'; valid options: "),
        ("segment=2", "unknown table option 'segment' (did you mean segments?)"),
        ("segments=2&segments=3", "given twice"),
        ("region=eu-central-1%0A", "control character"),
    ],
)
def test_bad_options(query: str, needle: str) -> None:
    assert needle in error_of(f"{BASE}?{query}")


@pytest.mark.parametrize("name", DECIDED)
def test_the_full_load_decides_where_the_stream_starts(name: str) -> None:
    assert "the full load decides it" in error_of(f"{BASE}?stream=s&{name}=x")


@pytest.mark.parametrize("name", ["once", "app", "idle-sleep", "worker-id"])
def test_stream_options_need_a_stream(name: str) -> None:
    assert "need stream=STREAM" in error_of(f"{BASE}?{name}=abc")


def test_the_stream_side() -> None:
    spec = parse_table(
        "dynamodb://KEY:SECRET@localhost:4566/orders?stream=orders-cdc&region=eu-central-1&batch-size=200"
        "&once=true&app=my-app&idle-sleep=0.2&tombstone-retention=7200&delete-mode=soft"
    )
    stream = spec.stream
    assert stream is not None
    assert (stream.stream, stream.region, stream.batch_size, stream.once, stream.app, stream.idle_sleep) == (
        "orders-cdc",
        "eu-central-1",
        200,
        True,
        "my-app",
        0.2,
    )
    assert stream.endpoint_url == "http://localhost:4566" and stream.dynamodb_endpoint is None
    assert stream.credentials == spec.credentials
    assert stream.source_table == "orders" and stream.start == "at-timestamp"
    assert stream.tombstone_retention == 7200.0
    assert (spec.delete_mode, stream.delete_mode) == ("soft", "soft")  # the full load's sinks and the stream's
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert spec.stream_from(start).timestamp == start


def test_stream_options_are_validated_by_the_stream_parser() -> None:
    assert "bad value 'x' for source option 'idle-sleep'" in error_of(f"{BASE}?stream=s&idle-sleep=x")


def test_help_lists_every_option() -> None:
    text = describe_table_options()
    for name in [*TABLE_OPTIONS, *STREAM_PASSTHROUGH]:
        assert f"{name}: " in text
    assert "segments: parallel Scan segments" in text and "(default 4)" in text


def test_ttl_ignore_keeps_the_rows_of_expired_items_unless_told() -> None:
    assert not parse_table(f"{BASE}?stream=s&ttl=ignore").prune
    assert parse_table(f"{BASE}?stream=s&ttl=ignore&prune=true").prune
    assert parse_table(f"{BASE}?stream=s&ttl=delete").prune
