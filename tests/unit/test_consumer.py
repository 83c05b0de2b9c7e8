"""consumer=polling|fanout: the URL option, the properties key, the KCL properties, the consumer's derived name."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcl_relay.kcl.consumer import (
    CONSUMER_ARN_KEY,
    CONSUMER_NAME_KEY,
    MAX_NAME,
    consumer_name,
    is_fanout,
    processor_idle_sleep,
)
from kcl_relay.kcl.properties import PropertiesFile, build_properties, check_keys, spec_from_properties
from kcl_relay.source.url import SourceError, parse_source

URL = "kinesis+dynamodb+cdc://localhost:4566/cdc-stream"
MINIMAL = {"streamName": "orders-cdc", "applicationName": "relay-app"}
POLLING_KEYS = ("maxRecords", "idleTimeBetweenReadsInMillis", "millisBehindLatestThresholdForReducedTps")


def test_polling_is_the_default() -> None:
    spec = parse_source(URL)
    assert spec.consumer == "polling"
    props = build_properties(spec, "relay-app")
    assert props["retrievalMode"] == "POLLING"
    assert not any(key.startswith("fanoutConfig.") for key in props)
    assert props["maxRecords"] == "5000"


def test_fanout_names_the_consumer_after_the_application() -> None:
    spec = parse_source(f"{URL}?consumer=fanout&idle-sleep=2")
    assert spec.consumer == "fanout"
    props = build_properties(spec, "relay-app")
    assert props["retrievalMode"] == "FANOUT"
    # Nested: the MultiLangDaemon 3.1.3 ignores consumerName at the top level (FanoutConfigBean is not flattened).
    assert props[CONSUMER_NAME_KEY] == "relay-app"
    assert "consumerName" not in props and CONSUMER_ARN_KEY not in props  # the ARN comes at start (consumer.prepare)
    assert not set(POLLING_KEYS) & set(props), "polling keys mean nothing under FANOUT"
    assert is_fanout(props)


def test_bad_consumer_value_is_one_line() -> None:
    with pytest.raises(
        SourceError, match=r"bad value 'efo' for source option 'consumer': expected one of polling, fanout"
    ):
        parse_source(f"{URL}?consumer=efo")


def test_consumer_does_not_apply_to_a_file_replay() -> None:
    with pytest.raises(SourceError, match="do not apply to a file replay"):
        parse_source("kinesis+dynamodb+cdc:///tmp/x.ndjson?consumer=fanout")


@pytest.mark.parametrize(
    ("extra", "consumer"),
    [
        ({"kclrelay.consumer": "fanout"}, "fanout"),
        ({"retrievalMode": "FANOUT"}, "fanout"),
        ({"retrievalMode": "fanout"}, "fanout"),  # the KCL upper-cases it
        ({"retrievalMode": "POLLING"}, "polling"),
        ({}, "polling"),
    ],
)
def test_properties_file_key(extra: dict[str, str], consumer: str) -> None:
    spec, _, _ = spec_from_properties({**MINIMAL, **extra})
    assert spec.consumer == consumer


def test_retrieval_mode_default_is_refused() -> None:
    # DEFAULT lets the KCL pick by whether polling keys are set: the relay always sets them, so say which one.
    with pytest.raises(SourceError, match=r"bad value 'DEFAULT' for retrievalMode: expected POLLING or FANOUT"):
        spec_from_properties({**MINIMAL, "retrievalMode": "DEFAULT"})


def test_retrieval_mode_and_kclrelay_consumer_together_are_refused() -> None:
    with pytest.raises(SourceError, match=r"sets both retrievalMode and kclrelay\.consumer: keep one"):
        spec_from_properties({**MINIMAL, "retrievalMode": "FANOUT", "kclrelay.consumer": "fanout"})


def test_nested_fanout_keys_are_kcl_keys() -> None:
    arn = "arn:aws:kinesis:us-east-1:1:stream/s/consumer/c:1"
    check_keys(PropertiesFile(Path("kcl.properties"), {**MINIMAL, CONSUMER_ARN_KEY: arn, CONSUMER_NAME_KEY: "c"}))


def test_consumer_name_is_the_application_when_it_fits() -> None:
    assert consumer_name("kcl-relay-orders-cdc-orders-1a2b3c4d") == "kcl-relay-orders-cdc-orders-1a2b3c4d"
    assert consumer_name("a" * MAX_NAME) == "a" * MAX_NAME


def test_a_long_application_gets_a_shortened_stable_distinct_consumer_name() -> None:
    # Application names go to 255 characters, consumer names to 128: shortened with a hash of the whole name.
    first, second = "a" * 200 + "-one", "a" * 200 + "-two"
    assert len(consumer_name(first)) == MAX_NAME
    assert consumer_name(first) == consumer_name(first)
    assert consumer_name(first) != consumer_name(second)
    assert consumer_name(first).startswith("a" * 100)


def test_processor_flushes_at_the_tip_under_fanout() -> None:
    # Polling: the next delivery after one at the tip comes idle-sleep later. Fan-out pushes records as they are
    # written: no known next delivery, so a record at the tip is not held for one (lookahead >= buffer-time).
    polling = parse_source(f"{URL}?idle-sleep=0.2&buffer-time=0.5")
    fanout = parse_source(f"{URL}?idle-sleep=0.2&buffer-time=0.5&consumer=fanout")
    assert processor_idle_sleep(polling, build_properties(polling, "app")) == 0.2
    assert processor_idle_sleep(fanout, build_properties(fanout, "app")) == 0.5
