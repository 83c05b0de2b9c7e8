"""The DynamoDB Streams source URL: dynamodb+cdc://[KEY:SECRET@]HOST[:PORT]/TABLE?options."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kcl_relay.source.table_url import parse_table
from kcl_relay.source.url import DYNAMODB_STREAMS, KINESIS, SourceError, parse_source


def test_a_table_url_reads_the_tables_stream() -> None:
    spec = parse_source("dynamodb+cdc://k:s%2F@127.0.0.1:4566/orders?region=eu-central-1&start=latest&once=true")
    assert (spec.kind, spec.stream, spec.region, spec.start, spec.once) == (
        DYNAMODB_STREAMS,
        "orders",
        "eu-central-1",
        "latest",
        True,
    )
    assert spec.is_dynamodb_streams and spec.endpoint_url == "http://127.0.0.1:4566"
    assert spec.credentials is not None and spec.credentials.secret_access_key == "s/"
    assert parse_source("kinesis+dynamodb+cdc://aws/orders").kind == KINESIS


def test_seqno_starts_apply() -> None:
    spec = parse_source("dynamodb+cdc://aws/orders?start=seqno-after&seqno=300000000000000499659")
    assert (spec.start, spec.seqno) == ("seqno-after", "300000000000000499659")


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("start=at-timestamp&timestamp=2026-11-27T10:00:00Z", "no AT_TIMESTAMP iterator"),
        ("start=at-timestamp", "no AT_TIMESTAMP iterator"),
        ("create=true", "the stream is the table's own"),
        ("create-shards=2", "DynamoDB manages the shards"),
        ("route-tables=true", "carries one table"),
        ("source-table=other", "carries one table"),
    ],
)
def test_what_a_dynamodb_stream_has_no_use_for_is_refused_with_one_line(query: str, why: str) -> None:
    with pytest.raises(SourceError, match=why) as refused:
        parse_source(f"dynamodb+cdc://aws/orders?{query}")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("url", ["dynamodb+cdc:///tmp/x.ndjson", "dynamodb+cdc://aws/", "dynamodb+cdc://aws/ab"])
def test_a_table_is_needed(url: str) -> None:
    with pytest.raises(SourceError, match=r"names no host|names no table|bad table name"):
        parse_source(url)


def test_application_names_of_the_two_sources_differ() -> None:
    kinesis = parse_source("kinesis+dynamodb+cdc://aws/orders")
    streams = parse_source("dynamodb+cdc://aws/orders")
    assert kinesis.application_name("orders", "db") != streams.application_name("orders", "db")
    assert streams.relay_identity("db") == "DynamoDB stream of table orders -> db"


def test_a_full_load_hands_over_to_the_tables_own_dynamodb_stream() -> None:
    spec = parse_table("dynamodb://127.0.0.1:4566/orders?stream=:dynamodb&once=true&region=eu-west-1&batch-size=50")
    assert spec.stream is not None and spec.stream.is_dynamodb_streams
    assert (spec.stream.stream, spec.stream.start, spec.stream.timestamp) == ("orders", "earliest", None)
    assert (spec.stream.region, spec.stream.batch_size, spec.stream.once) == ("eu-west-1", 50, True)
    assert spec.stream.endpoint_url == "http://127.0.0.1:4566"
    # Its trim horizon is before the scan: the start time of a Kinesis stream does not apply.
    assert spec.stream_from(datetime(2026, 12, 1, tzinfo=timezone.utc)) == spec.stream
    kinesis = parse_table("dynamodb://aws/orders?stream=orders-cdc")
    assert kinesis.stream is not None and not kinesis.stream.is_dynamodb_streams


def test_stream_names_with_a_colon_are_not_kinesis_streams() -> None:
    with pytest.raises(SourceError, match="or :dynamodb"):
        parse_table("dynamodb://aws/orders?stream=:kinesis")
