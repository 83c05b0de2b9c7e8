"""run --properties on a DynamoDB stream: kclrelay.dynamodb-table instead of streamName; its own template."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcl_relay.kcl.properties import read_properties, spec_from_properties
from kcl_relay.source import dynamodb_streams
from kcl_relay.source.url import SourceError

REPO = Path(__file__).resolve().parents[2]


def test_the_template_reads_the_tables_own_stream() -> None:
    spec, kcl_props, relay_props = spec_from_properties(
        read_properties(REPO / "properties" / "dynamodb-streams.properties")
    )
    assert spec.is_dynamodb_streams and spec.stream == "orders"
    assert (spec.app, spec.region, spec.start) == ("kcl-relay-orders-ddbstream", "eu-central-1", "earliest")
    assert "streamName" not in kcl_props and "dynamodb-table" not in relay_props
    assert float(relay_props["buffer-time"]) == spec.buffer_time > 0


def test_streamname_and_dynamodb_table_exclude_each_other() -> None:
    with pytest.raises(SourceError, match=r"sets both streamName and kclrelay\.dynamodb-table"):
        spec_from_properties({"streamName": "s", "applicationName": "app", "kclrelay.dynamodb-table": "orders"})


def test_what_a_dynamodb_stream_has_no_use_for_is_refused_in_the_files_words() -> None:
    props = {"applicationName": "app", "kclrelay.dynamodb-table": "orders", "initialPositionInStreamExtended": "1"}
    with pytest.raises(SourceError, match="does not apply to dynamodb"):
        spec_from_properties(props)


def test_the_kcl_gets_the_streams_arn_and_at_most_1000_records_per_call() -> None:
    stream = dynamodb_streams.TableStream(
        "orders", "arn:aws:dynamodb:eu-central-1:1:table/orders/stream/L", "NEW_IMAGE"
    )
    assert dynamodb_streams.kcl_properties(stream, {"maxRecords": "5000"}) == {
        "streamName": stream.arn,
        "maxRecords": "1000",
    }
    assert dynamodb_streams.kcl_properties(stream, {"maxRecords": "200"})["maxRecords"] == "200"
