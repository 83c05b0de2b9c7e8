"""parse_source: hosts, credentials, file sources, every option (good, bad, default), combinations, --help text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.source.url import (
    APP_NAME,
    OPTIONS,
    Credentials,
    SourceError,
    SourceSpec,
    describe_options,
    parse_source,
)

BASE = "kinesis+dynamodb+cdc://aws/dynamodb-cdc"
ORDERS_MAPPING = str(Path(__file__).resolve().parents[2] / "docs" / "mappings" / "orders.toml")
SEQNO = "49590338271490256608559692538361571095921575989136588898"


def source(query: str = "", base: str = BASE) -> SourceSpec:
    return parse_source(f"{base}?{query}" if query else base)


def error_of(url: str) -> str:
    with pytest.raises(SourceError) as caught:
        parse_source(url)
    message = str(caught.value)
    assert "\n" not in message, "a source error is one line"
    return message


# ---- hosts ----------------------------------------------------------------------------------------------------


def test_host_aws_means_the_aws_endpoints_of_the_region() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://aws/dynamodb-cdc?region=eu-central-1")
    assert spec.stream == "dynamodb-cdc"
    assert spec.endpoint_url is None
    assert spec.credentials is None
    assert spec.region == "eu-central-1"
    assert spec.path is None and not spec.is_file


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("kinesis+dynamodb+cdc://localhost:4566/cdc-stream", "http://localhost:4566"),
        ("kinesis+dynamodb+cdc://127.0.0.1:4566/cdc-stream", "http://127.0.0.1:4566"),
        ("kinesis+dynamodb+cdc://kinesis.internal/cdc-stream", "http://kinesis.internal"),
    ],
)
def test_any_other_host_is_one_plain_http_endpoint(url: str, endpoint: str) -> None:
    spec = parse_source(url)
    assert spec.endpoint_url == endpoint
    assert spec.stream == "cdc-stream"
    assert not spec.is_file


def test_ipv6_host_keeps_its_brackets() -> None:
    assert parse_source("kinesis+dynamodb+cdc://[::1]:4566/cdc-stream").endpoint_url == "http://[::1]:4566"


@pytest.mark.parametrize("port", ["notaport", "99999", "-1"])
def test_bad_port(port: str) -> None:
    assert "bad port" in error_of(f"kinesis+dynamodb+cdc://localhost:{port}/s")


def test_bad_port_message_never_shows_the_credentials() -> None:
    message = error_of("kinesis+dynamodb+cdc://AKIDKEY:sup3rs3cret@localhost:abc/s")
    assert "bad port" in message and "localhost:abc" in message
    assert "sup3rs3cret" not in message and "AKIDKEY" not in message


# ---- credentials ----------------------------------------------------------------------------------------------


def test_credentials_are_url_decoded() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://AKIA%2BKEY:wJalr%2FK7%2BMDENG%40x%3Ay%25z@localhost:4566/s")
    assert spec.credentials == Credentials("AKIA+KEY", "wJalr/K7+MDENG@x:y%z")
    assert spec.endpoint_url == "http://localhost:4566"
    assert spec.stream == "s"


def test_plus_in_credentials_stays_a_plus() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://KEY:a+b@aws/s")
    assert spec.credentials is not None
    assert spec.credentials.secret_access_key == "a+b"
    assert spec.endpoint_url is None


def test_repr_and_str_never_show_the_secret() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://AKIDKEY:wJalr%2FSECRETxyz@localhost:4566/s")
    assert spec.credentials is not None and spec.credentials.secret_access_key == "wJalr/SECRETxyz"
    for text in (repr(spec), str(spec), repr(spec.credentials), str(spec.credentials), f"{spec!r:}"):
        assert "SECRETxyz" not in text and "wJalr" not in text
    assert "AKIDKEY" in repr(spec.credentials)  # the key id is no secret and helps to tell credentials apart
    assert "***" in repr(spec.credentials)


@pytest.mark.parametrize(
    "url",
    [
        "kinesis+dynamodb+cdc://KEYONLY@localhost:4566/s",
        "kinesis+dynamodb+cdc://KEY:@localhost:4566/s",
    ],
)
def test_credentials_need_key_and_secret(url: str) -> None:
    assert "KEY:SECRET" in error_of(url)


def test_credentials_need_a_key_id() -> None:
    assert "KEY:SECRET" in error_of("kinesis+dynamodb+cdc://:s3cret@localhost:4566/s")


@pytest.mark.parametrize(
    ("secret", "parts"),
    [
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ("wJalrXUtnFEMI", "K7MDENG", "bPxRfiCYEXAMPLEKEY")),
        ("12345/K7MDENGbPxRfiCYEXAMPLEKEY", ("K7MDENGbPxRfiCYEXAMPLEKEY",)),
    ],
)
def test_unencoded_slash_in_secret_never_reaches_the_error(secret: str, parts: tuple[str, ...]) -> None:
    message = error_of(f"kinesis+dynamodb+cdc://AKIAEXAMPLE:{secret}@localhost:4566/cdc")
    for part in parts:
        assert part not in message


# ---- file source ----------------------------------------------------------------------------------------------


def test_file_source() -> None:
    spec = parse_source("kinesis+dynamodb+cdc:///abs/path.ndjson")
    assert spec.is_file
    assert spec.path == "/abs/path.ndjson"
    assert spec.stream is None and spec.endpoint_url is None and spec.credentials is None


def test_file_source_path_is_url_decoded_and_takes_options() -> None:
    spec = parse_source("kinesis+dynamodb+cdc:///tmp/my%20dir/cdc.ndjson?batch-size=7&ttl=ignore")
    assert spec.path == "/tmp/my dir/cdc.ndjson"
    assert (spec.batch_size, spec.ttl) == (7, "ignore")


@pytest.mark.parametrize("url", ["kinesis+dynamodb+cdc://", "kinesis+dynamodb+cdc:///", "kinesis+dynamodb+cdc:"])
def test_neither_host_nor_file(url: str) -> None:
    assert "no host and no file" in error_of(url)


# ---- scheme and stream ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "kinesis://aws/s",
        "https://aws/s",
        "kinesis+dynamodb://aws/s",
        "aws/dynamodb-cdc",
        "KINESIS+DYNAMODB+CDC-x://aws/s",
        "",
    ],
)
def test_bad_scheme(url: str) -> None:
    assert "must start with kinesis+dynamodb+cdc://" in error_of(url)


@pytest.mark.parametrize(
    "url", ["kinesis+dynamodb+cdc://aws", "kinesis+dynamodb+cdc://aws/", "kinesis+dynamodb+cdc://h:1/"]
)
def test_missing_stream(url: str) -> None:
    assert "names no stream" in error_of(url)


@pytest.mark.parametrize("stream", ["a%20b", "a/b", "x" * 129, "st%C3%BCck", "a%40b"])
def test_bad_stream_name(stream: str) -> None:
    assert "bad stream name" in error_of(f"kinesis+dynamodb+cdc://aws/{stream}")


@pytest.mark.parametrize("stream", ["a", "A.b_c-1", "x" * 128])
def test_good_stream_names(stream: str) -> None:
    assert parse_source(f"kinesis+dynamodb+cdc://aws/{stream}").stream == stream


# ---- every option ---------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)

# option -> (query, SourceSpec field, expected value); the query may hold the options the value needs
GOOD: dict[str, tuple[str, str, Any]] = {
    "batch-size": ("batch-size=10000", "batch_size", 10000),
    "create": ("create=TRUE", "create", True),
    "create-shards": ("create-shards=500", "create_shards", 500),
    "region": ("region=us-gov-west-1", "region", "us-gov-west-1"),
    "start": ("start=latest", "start", "latest"),
    "seqno": (f"start=seqno-after&seqno={SEQNO}", "seqno", SEQNO),
    "timestamp": ("start=at-timestamp&timestamp=2026-11-27T10:00:00Z", "timestamp", T0),
    "idle-sleep": ("idle-sleep=0.25", "idle_sleep", 0.25),
    "buffer-time": ("buffer-time=0", "buffer_time", 0.0),
    "once": ("once=yes", "once", True),
    "reset": ("reset=true", "reset", True),
    "log-level": ("log-level=info", "log_level", "info"),
    "app": ("app=my.app_1-x", "app", "my.app_1-x"),
    "worker-id": ("worker-id=host%201", "worker_id", "host 1"),
    "failover-time": ("failover-time=2.5", "failover_time", 2.5),
    "max-leases": ("max-leases=4", "max_leases", 4),
    "shard-sync-interval": ("shard-sync-interval=60", "shard_sync_interval", 60.0),
    "ttl": ("ttl=ignore", "ttl", "ignore"),
    "route-tables": ("route-tables=on", "route_tables", True),
    "source-table": ("source-table=orders.v2", "source_table", "orders.v2"),
    "tombstone-retention": ("tombstone-retention=3600", "tombstone_retention", 3600.0),
    "delete-mode": ("delete-mode=soft", "delete_mode", "soft"),
    "retry-timeout": ("retry-timeout=900", "retry_timeout", 900.0),
    "dynamodb-endpoint": ("dynamodb-endpoint=http://127.0.0.1:4567/", "dynamodb_endpoint", "http://127.0.0.1:4567"),
    "metrics-port": ("metrics-port=9464", "metrics_port", 9464),
    "metrics-host": ("metrics-host=::", "metrics_host", "::"),
    "kcl-metrics": ("kcl-metrics=summary", "kcl_metrics", "summary"),
    "consumer": ("consumer=fanout", "consumer", "fanout"),
    "mapping": (f"mapping={ORDERS_MAPPING}", "mapping", ORDERS_MAPPING),
}

BAD: dict[str, list[str]] = {
    "batch-size": ["0", "10001", "abc", "1.5", ""],
    "create": ["maybe", "2", ""],
    "create-shards": ["0", "501"],
    "region": ["EU-CENTRAL-1", "eu-central", "mars", ""],
    "start": ["beginning", "EARLIEST", ""],
    "seqno": ["12a", "", "-5", "9" * 129],
    "timestamp": ["yesterday", "2026-13-01", ""],
    "idle-sleep": ["-1", "nan", "inf", "x", str(86400 * 366)],
    "buffer-time": ["-0.1", "1e9"],
    "once": ["sometimes"],
    "reset": ["please"],
    "log-level": ["INFO", "trace", ""],
    "app": ["ab", "has space", "x" * 256, ""],
    "worker-id": [""],
    "failover-time": ["-5"],
    "max-leases": ["0", "100001", "many"],
    "shard-sync-interval": ["soon"],
    "ttl": ["keep", "DELETE"],
    "route-tables": ["yes please"],
    "source-table": [""],
    "tombstone-retention": ["-1", "forever", "0", "3599"],  # below an hour it protects nothing
    "delete-mode": ["", "SOFT", "archive"],
    "retry-timeout": ["-1", "later"],
    "dynamodb-endpoint": ["127.0.0.1:4567", "ftp://host", "http://host/path", ""],
    "metrics-port": ["0", "65536", "http", ""],
    "metrics-host": ["", "host name", "a/b"],
    "kcl-metrics": ["SUMMARY", "cloudwatch", ""],
    "consumer": ["FANOUT", "efo", ""],
    "mapping": ["", "/no/such/mapping.toml", "/etc"],
}


def test_the_tables_cover_every_option() -> None:
    assert set(GOOD) == set(OPTIONS) == set(BAD)


@pytest.mark.parametrize("name", list(GOOD))
def test_good_value(name: str) -> None:
    query, attr, expected = GOOD[name]
    spec = source(query)
    assert OPTIONS[name][0] == attr
    assert getattr(spec, attr) == expected
    assert getattr(SourceSpec(), attr) != expected, "the good value must differ from the default"


@pytest.mark.parametrize(("name", "raw"), [(name, raw) for name, raws in BAD.items() for raw in raws])
def test_bad_value(name: str, raw: str) -> None:
    message = error_of(f"{BASE}?{name}={raw}")
    assert message.startswith(f"bad value {raw!r} for source option {name!r}: ")
    assert "invalid literal" not in message and "could not convert" not in message, "in the user's words: " + message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_booleans(text: str, expected: bool) -> None:
    assert source(f"once={text}&create={text}&route-tables={text}").once is expected


def test_defaults() -> None:
    spec = parse_source(BASE)
    assert spec == SourceSpec(stream="dynamodb-cdc")
    assert (spec.region, spec.batch_size, spec.start, spec.ttl) == ("us-east-1", 100, "earliest", "delete")
    assert (spec.idle_sleep, spec.buffer_time, spec.failover_time, spec.shard_sync_interval) == (0.5, 0.5, 10.0, 10.0)
    assert (spec.create, spec.create_shards, spec.once, spec.route_tables) == (False, 1, False, False)
    assert spec.tombstone_retention == 86400.0
    assert spec.seqno is spec.timestamp is spec.app is spec.worker_id is spec.max_leases is spec.source_table is None


def test_unknown_option_lists_the_valid_ones() -> None:
    message = error_of(f"{BASE}?batchsize=5")
    assert message.startswith("unknown source option 'batchsize' (did you mean batch-size?); valid options: ")
    listed = message.split("valid options: ", 1)[1].split(", ")
    assert listed == list(OPTIONS)


def test_an_option_without_value_is_a_bad_value() -> None:
    assert error_of(f"{BASE}?once").startswith("bad value '' for source option 'once'")


def test_options_combine() -> None:
    spec = source("region=eu-west-1&batch-size=250&buffer-time=1.5&once=true&ttl=ignore&max-leases=2")
    assert (spec.region, spec.batch_size, spec.buffer_time, spec.once, spec.ttl, spec.max_leases) == (
        "eu-west-1",
        250,
        1.5,
        True,
        "ignore",
        2,
    )


@pytest.mark.parametrize("seqno", ["%C2%B2", "%D9%A3%D9%A4"])  # "²", Arabic-Indic "34"
def test_seqno_is_ascii_digits_only(seqno: str) -> None:
    error_of(f"{BASE}?start=seqno-at&seqno={seqno}")


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}?app=abc%0A",
        f"{BASE}?region=us-east-1%0A",
        "kinesis+dynamodb+cdc://aws/stream%0A",
    ],
)
def test_names_with_a_trailing_newline_are_refused(url: str) -> None:
    error_of(url)


# ---- start / seqno / timestamp --------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["seqno-at", "seqno-after"])
def test_seqno_starts(start: str) -> None:
    spec = source(f"start={start}&seqno={SEQNO}")
    assert (spec.start, spec.seqno) == (start, SEQNO)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("start=seqno-at", "start=seqno-at needs seqno="),
        ("start=seqno-after", "start=seqno-after needs seqno="),
        (f"seqno={SEQNO}", "seqno= needs start=seqno-at or start=seqno-after"),
        (f"start=latest&seqno={SEQNO}", "seqno= needs start=seqno-at"),
        (f"start=at-timestamp&seqno={SEQNO}", "seqno= needs start=seqno-at"),
        ("start=at-timestamp", "start=at-timestamp needs timestamp="),
        ("timestamp=2026-01-01T00:00:00Z", "timestamp= needs start=at-timestamp"),
        ("start=seqno-at&seqno=1&timestamp=2026-01-01T00:00:00Z", "timestamp= needs start=at-timestamp"),
        ("route-tables=true&source-table=orders", "exclude each other"),
    ],
)
def test_bad_combinations(query: str, needle: str) -> None:
    assert needle in error_of(f"{BASE}?{query}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:00:00Z", T0),
        ("2026-11-27T10:00:00", T0),  # no zone: UTC
        ("2026-11-27T12:00:00%2B02:00", T0),  # "+" must be %2B in a query
        ("2026-11-27T10:00:00.250Z", T0 + timedelta(milliseconds=250)),
        ("2026-11-27", T0 - timedelta(hours=10)),
    ],
)
def test_at_timestamp(text: str, expected: datetime) -> None:
    spec = source(f"start=at-timestamp&timestamp={text}")
    assert spec.start == "at-timestamp"
    assert spec.timestamp == expected
    assert spec.timestamp is not None and spec.timestamp.utcoffset() is not None


# ---- application name -----------------------------------------------------------------------------------------


def test_application_name_explicit_wins() -> None:
    assert source("app=my-relay").application_name("orders") == "my-relay"


def test_application_name_derived_from_stream_and_table() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://aws/dynamodb-cdc")
    assert spec.application_name("orders") == "kcl-relay-dynamodb-cdc-orders"
    assert spec.application_name("orders") == spec.application_name("orders"), "every worker derives the same"
    assert spec.application_name("orders") != spec.application_name("invoices")


@pytest.mark.parametrize("table", ["my table", "tbl$x", "東京", "doc.orders", "x" * 300])
def test_application_name_is_always_a_valid_kcl_name(table: str) -> None:
    spec = parse_source(f"kinesis+dynamodb+cdc://aws/{'s' * 128}")
    name = spec.application_name(table)
    assert re.fullmatch(r"[a-zA-Z0-9_.-]{3,255}", name)
    assert APP_NAME.match(name)
    assert name.startswith(f"kcl-relay-{'s' * 128}-")


def test_application_name_replaces_disallowed_characters() -> None:
    assert parse_source(BASE).application_name("tbl$x y") == "kcl-relay-dynamodb-cdc-tbl-x-y"


# ---- --help text ----------------------------------------------------------------------------------------------


def test_describe_options_lists_every_option_with_its_default() -> None:
    lines = describe_options().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == list(OPTIONS)
    defaults = SourceSpec()
    for line, (name, (attr, _parser, text)) in zip(lines, OPTIONS.items(), strict=True):
        assert line.startswith(f"{name}: {text}")
        default = getattr(defaults, attr)
        if default is None:
            assert "(default " not in line
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert line.endswith(f"(default {shown})")
            # what --help shows as the default parses back to the default
            assert OPTIONS[name][1](shown) == default


def test_describe_options_examples() -> None:
    text = describe_options()
    assert "batch-size: records per database batch (not per GetRecords) (default 100)" in text
    assert "(default false)" in text and "(default True)" not in text
    assert "region: AWS region (default us-east-1)" in text
    assert "tombstone-retention: seconds to keep delete tombstones, at least 3600" in text


@pytest.mark.parametrize("name", ["app", "max-leases", "metrics-port"])
def test_every_optional_setting_says_what_happens_without_it(name: str) -> None:
    (line,) = [line for line in describe_options().splitlines() if line.startswith(f"{name}:")]
    assert "default" in line


@pytest.mark.parametrize("separator", ["?", "#", "/"])
def test_unencoded_secret_characters_never_reach_the_error(separator: str) -> None:
    with pytest.raises(SourceError) as error:
        parse_source(f"kinesis+dynamodb+cdc://AKIAX:abc{separator}SECRETPART@aws/s")
    assert "SECRETPART" not in str(error.value) and "abc" not in str(error.value)
    assert "URL-encoded" in str(error.value)


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(SourceError, match="'once' is given twice"):
        parse_source("kinesis+dynamodb+cdc://aws/s?once=true&once=false")


def test_stream_options_do_not_apply_to_a_file_replay() -> None:
    with pytest.raises(SourceError, match="start do not apply to a file replay"):
        parse_source("kinesis+dynamodb+cdc:///tmp/x.ndjson?start=latest")
    spec = parse_source("kinesis+dynamodb+cdc:///tmp/x.ndjson?batch-size=5&ttl=ignore&route-tables=true")
    assert (spec.batch_size, spec.ttl, spec.route_tables) == (5, "ignore", True)


def test_application_name_follows_the_normalized_target_identity() -> None:
    from kcl_relay.sink.target import parse_target

    spec = parse_source("kinesis+dynamodb+cdc://aws/dynamodb-cdc")
    one = parse_target("crate://admin:pw@DB.example/doc/orders?ssl=true", None)
    same = parse_target("crate://other@db.example:4200/doc/orders", None)
    other = parse_target("crate://db.example/doc/orders2", None)
    name = spec.application_name(one.table, one.identity())
    assert name == spec.application_name(same.table, same.identity()), "one target, however spelled: one application"
    assert name != spec.application_name(other.table, other.identity())
    assert re.fullmatch(r"kcl-relay-dynamodb-cdc-orders-[0-9a-f]{8}", name)
    other_stream = parse_source("kinesis+dynamodb+cdc://aws/other-cdc")
    assert other_stream.application_name(one.table, one.identity()).startswith("kcl-relay-other-cdc-orders-")
    assert spec.relay_identity(one.identity()) == "stream dynamodb-cdc -> cratedb://db.example:4200 table doc.orders"


@pytest.mark.parametrize(
    ("given", "meant"),
    [("Batch-Size", "batch-size"), ("idle_sleep", "idle-sleep"), ("workerid", "worker-id"), ("region2", "region")],
)
def test_an_unknown_option_names_the_one_it_likely_meant(given: str, meant: str) -> None:
    assert f"unknown source option '{given}' (did you mean {meant}?); valid options: " in error_of(f"{BASE}?{given}=1")


def test_an_unknown_option_unlike_any_gets_no_guess() -> None:
    assert error_of(f"{BASE}?zzz=1").startswith("unknown source option 'zzz'; valid options: ")
