"""SourceSpec -> KCL multilang properties and back: keys, units, no secrets, file mode, parsing."""

from __future__ import annotations

import dataclasses
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcl_relay.kcl.properties import (
    KCL_FANOUT_KEYS,
    KCL_KEYS,
    PROCESSOR_COMMAND,
    SHUTDOWN_GRACE_MILLIS,
    PropertiesFile,
    build_properties,
    check_keys,
    is_kcl_key,
    read_properties,
    read_properties_file,
    render,
    spec_from_properties,
    worker_metrics_report_millis,
    write_properties,
)
from kcl_relay.source.url import Credentials, SourceError, SourceSpec, parse_source

REPO = Path(__file__).resolve().parents[2]
AWS = "kinesis+dynamodb+cdc://aws/dynamodb-cdc"
EMULATOR = "kinesis+dynamodb+cdc://localhost:4566/cdc-stream"
EPOCH_2026_11_27_10 = 1795773600  # 2026-11-27T10:00:00Z


def props_of(url: str, app: str = "kcl-relay-app") -> dict[str, str]:
    return build_properties(parse_source(url), app)


# ---- build_properties -----------------------------------------------------------------------------------------


def test_default_properties() -> None:
    props = props_of(f"{AWS}?region=eu-central-1", "my-app")
    assert props["executableName"] == PROCESSOR_COMMAND
    assert props["executableName"] == f"{sys.executable} -m kcl_relay.kcl.processor"
    assert props["processingLanguage"] == f"python/{sys.version_info.major}.{sys.version_info.minor}"
    assert props["streamName"] == "dynamodb-cdc"
    assert props["applicationName"] == "my-app"
    assert props["regionName"] == "eu-central-1"
    assert props["AwsCredentialsProvider"] == "DefaultCredentialsProvider"
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    # batch-size is the database batch only: the KCL reads as much as it can, and pauses idle-sleep at the tip.
    assert props["maxRecords"] == "5000"
    assert props["idleTimeBetweenReadsInMillis"] == "200"
    assert props["millisBehindLatestThresholdForReducedTps"] == "500"
    assert props["leaseAssignmentIntervalMillis"] == "1000"
    assert props["inMemoryWorkerMetricsCaptureFrequencyMillis"] == "200"
    # a crashed worker counts as dead (two missed reports) by the time its leases expire (failover-time 10 s)
    assert props["workerMetricsReporterFreqInMillis"] == "5000"
    assert props["varianceBalancingFrequency"] == "60"  # rebalancing once a minute, as with the KCL's defaults
    assert props["callProcessRecordsEvenForEmptyRecordList"] == "true"
    assert props["retrievalMode"] == "POLLING"
    assert props["shutdownGraceMillis"] == str(SHUTDOWN_GRACE_MILLIS)
    assert props["failoverTimeMillis"] == "10000"
    assert props["shardSyncIntervalMillis"] == "10000"
    assert props["metricsLevel"] == "NONE"  # the KCL's CloudWatch metrics are opt-in (kcl-metrics)
    for absent in (
        "kinesisEndpoint",
        "dynamoDBEndpoint",
        "cloudWatchClient.endpointOverride",
        "workerId",
        "maxLeasesForWorker",
        "initialPositionInStreamExtended",
    ):
        assert absent not in props
    assert all(isinstance(value, str) for value in props.values())


def test_emulator_endpoint() -> None:
    props = props_of(EMULATOR)
    assert props["kinesisEndpoint"] == "http://localhost:4566"
    assert props["dynamoDBEndpoint"] == "http://localhost:4566"
    assert props["metricsLevel"] == "NONE"
    assert props["streamName"] == "cdc-stream"
    assert "cloudWatchClient.endpointOverride" not in props


@pytest.mark.parametrize("level", ["summary", "detailed"])
def test_kcl_metrics_opt_in(level: str) -> None:
    on_aws = props_of(f"kinesis+dynamodb+cdc://aws/s?kcl-metrics={level}")
    assert on_aws["metricsLevel"] == level.upper()
    assert "cloudWatchClient.endpointOverride" not in on_aws  # AWS's own CloudWatch of the region
    emulated = props_of(f"{EMULATOR}?kcl-metrics={level}")
    assert emulated["metricsLevel"] == level.upper()
    assert emulated["cloudWatchClient.endpointOverride"] == "http://localhost:4566"  # the emulator's CloudWatch


def test_metrics_level_key_reads_as_kcl_metrics() -> None:
    spec, _, _ = spec_from_properties({**MINIMAL, "metricsLevel": "DETAILED"})
    assert spec.kcl_metrics == "detailed"
    with pytest.raises(SourceError, match=r"both metricsLevel and kclrelay\.kcl-metrics"):
        spec_from_properties({**MINIMAL, "metricsLevel": "SUMMARY", "kclrelay.kcl-metrics": "none"})
    with pytest.raises(SourceError, match="bad value 'LOUD' for metricsLevel: expected NONE, SUMMARY or DETAILED"):
        spec_from_properties({**MINIMAL, "metricsLevel": "LOUD"})


def test_metrics_port_as_properties_key() -> None:
    spec, _, relay_props = spec_from_properties(
        {**MINIMAL, "kclrelay.metrics-port": "9464", "kclrelay.metrics-host": "0.0.0.0"}
    )
    assert (spec.metrics_port, spec.metrics_host) == (9464, "0.0.0.0")
    assert relay_props["metrics-port"] == "9464"


@pytest.mark.parametrize(
    ("timestamp", "epoch"),
    [
        ("2026-11-27T10:00:00Z", EPOCH_2026_11_27_10),
        ("2026-11-27T12:00:00%2B02:00", EPOCH_2026_11_27_10),
        ("2026-11-27T10:00:00", EPOCH_2026_11_27_10),  # zone-less: UTC
        ("2026-11-27T10:00:00.900Z", EPOCH_2026_11_27_10),  # whole seconds, never later than asked
    ],
)
def test_at_timestamp_gives_epoch_seconds(timestamp: str, epoch: int) -> None:
    props = props_of(f"{AWS}?start=at-timestamp&timestamp={timestamp}")
    assert props["initialPositionInStreamExtended"] == str(epoch)


def test_at_timestamp_leaves_initial_position_to_the_extended_key() -> None:
    # KCL 3.1.3 refuses initialPositionInStream = AT_TIMESTAMP (InitialPositionInStreamExtended.newInitialPosition
    # throws IllegalArgumentException); initialPositionInStreamExtended alone sets the position and the time.
    props = props_of(f"{AWS}?start=at-timestamp&timestamp=2026-11-27T10:00:00Z")
    assert "initialPositionInStream" not in props
    assert props["initialPositionInStreamExtended"] == str(EPOCH_2026_11_27_10)


@pytest.mark.parametrize(
    ("query", "position"),
    [
        ("", "TRIM_HORIZON"),
        ("start=earliest", "TRIM_HORIZON"),
        ("start=latest", "LATEST"),
        ("start=seqno-at&seqno=4959", "TRIM_HORIZON"),  # the processor skips to the sequence number
        ("start=seqno-after&seqno=4959", "TRIM_HORIZON"),
    ],
)
def test_initial_position(query: str, position: str) -> None:
    props = props_of(f"{AWS}?{query}")
    assert props["initialPositionInStream"] == position
    assert "initialPositionInStreamExtended" not in props


@pytest.mark.parametrize(
    ("query", "key", "value"),
    [
        ("worker-id=host-1", "workerId", "host-1"),
        ("max-leases=4", "maxLeasesForWorker", "4"),
        ("batch-size=7", "maxRecords", "5000"),
        ("batch-size=5000", "maxRecords", "5000"),
        ("batch-size=5001", "maxRecords", "2000"),  # a delivery and a large database batch together stay small
        ("batch-size=10000", "maxRecords", "2000"),
        ("idle-sleep=0.25", "millisBehindLatestThresholdForReducedTps", "250"),
        ("idle-sleep=1.0004", "millisBehindLatestThresholdForReducedTps", "1000"),
        ("idle-sleep=0.25", "idleTimeBetweenReadsInMillis", "200"),
        ("idle-sleep=5", "idleTimeBetweenReadsInMillis", "200"),
        ("failover-time=2.5", "failoverTimeMillis", "2500"),
        ("shard-sync-interval=60", "shardSyncIntervalMillis", "60000"),
        ("region=ap-southeast-2", "regionName", "ap-southeast-2"),
    ],
)
def test_option_to_property(query: str, key: str, value: str) -> None:
    assert props_of(f"{AWS}?{query}")[key] == value


@pytest.mark.parametrize("idle_sleep", ["0", "0.1", "0.2"])
def test_idle_sleep_at_or_below_the_kcl_floor(idle_sleep: str) -> None:
    # The KCL never reads a shard more often than every 200 ms (PollingConfig.MIN_IDLE_MILLIS_BETWEEN_READS): no
    # threshold above that floor is needed, and none below it is written (the KCL would warn and round it up).
    props = props_of(f"{AWS}?idle-sleep={idle_sleep}")
    assert props["idleTimeBetweenReadsInMillis"] == "200"
    assert "millisBehindLatestThresholdForReducedTps" not in props


def test_relay_only_options_are_not_kcl_properties() -> None:
    props = props_of(f"{AWS}?buffer-time=3&ttl=ignore&tombstone-retention=7200&once=true&create=true")
    assert props == props_of(AWS)


def test_no_property_holds_the_credentials() -> None:
    spec = parse_source("kinesis+dynamodb+cdc://AKIDKEYID:wJalr%2FS3CRETkey@localhost:4566/s?worker-id=w")
    assert spec.credentials == Credentials("AKIDKEYID", "wJalr/S3CRETkey")
    props = build_properties(spec, spec.application_name("t"))
    text = render(props)
    for secret in ("wJalr/S3CRETkey", "S3CRET", "wJalr%2F", "AKIDKEYID"):
        assert secret not in text
        assert all(secret not in value for value in props.values())
    assert props["AwsCredentialsProvider"] == "DefaultCredentialsProvider"


def test_values_cannot_inject_properties(tmp_path: Path) -> None:
    # The URL refuses control characters outright; render() escapes whatever reaches it all the same.
    with pytest.raises(SourceError, match="control character"):
        parse_source(f"{AWS}?worker-id=w%0AexecutableName%3D/bin/evil")
    props = build_properties(parse_source(AWS), "app-x")
    props["workerId"] = "w\nexecutableName=/bin/evil\\"
    written = read_properties(write_properties(tmp_path / "kcl.properties", props))
    assert written["executableName"] == PROCESSOR_COMMAND
    assert written["workerId"] == props["workerId"]
    assert written == props


# ---- write / read ---------------------------------------------------------------------------------------------


def test_write_properties_is_owner_only_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "kcl.properties"
    path.write_text("stale = 1\n")
    path.chmod(0o644)
    props = props_of(f"{EMULATOR}?worker-id=w-1&max-leases=3&start=latest")
    assert write_properties(path, props) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_properties(path) == props
    assert "stale" not in path.read_text()


def test_write_properties_new_file_mode(tmp_path: Path) -> None:
    path = write_properties(tmp_path / "new.properties", {"a": "1"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "a = 1\n"


def test_read_properties_syntax(tmp_path: Path) -> None:
    path = tmp_path / "x.properties"
    path.write_text(
        "# a comment = not a key\n"
        "! another: comment\n"
        "\n"
        "   \n"
        "streamName = demo-cdc\n"
        "applicationName=app-one\n"
        "regionName: eu-west-1\n"
        "workerId:w1\n"
        "   maxRecords   =   25   \n"
        "kinesisEndpoint = http://127.0.0.1:4566\n"
        "kclrelay.table = a=b\n"
        "empty =\n"
    )
    assert read_properties(path) == {
        "streamName": "demo-cdc",
        "applicationName": "app-one",
        "regionName": "eu-west-1",
        "workerId": "w1",
        "maxRecords": "25",
        "kinesisEndpoint": "http://127.0.0.1:4566",
        "kclrelay.table": "a=b",
        "empty": "",
    }


def test_read_properties_first_separator_wins(tmp_path: Path) -> None:
    path = tmp_path / "x.properties"
    path.write_text("workerId: host=1\n")
    assert read_properties(path) == {"workerId": "host=1"}


@pytest.mark.parametrize("name", ["local.properties", "aws.properties", "cratedb-cloud.properties"])
def test_shipped_templates_parse(name: str) -> None:
    spec, kcl_props, relay_props = spec_from_properties(read_properties(REPO / "properties" / name))
    assert spec.stream == kcl_props["streamName"]
    assert spec.app == kcl_props["applicationName"]
    assert not any(key.startswith("kclrelay.") for key in kcl_props)
    assert float(relay_props["buffer-time"]) == spec.buffer_time > 0
    # No template caps GetRecords: batch-size is the database batch, the KCL reads what it can.
    assert "maxRecords" not in kcl_props and "idleTimeBetweenReadsInMillis" not in kcl_props


def test_local_template() -> None:
    spec, kcl_props, relay_props = spec_from_properties(read_properties(REPO / "properties" / "local.properties"))
    assert (spec.stream, spec.app, spec.region) == ("demo-cdc", "kcl-relay-demo", "us-east-1")
    assert spec.endpoint_url == "http://127.0.0.1:4566"
    assert (spec.batch_size, spec.idle_sleep, spec.buffer_time, spec.ttl) == (100, 0.5, 0.5, "delete")
    assert (spec.failover_time, spec.shard_sync_interval, spec.start) == (10.0, 10.0, "earliest")
    assert relay_props["table"] == "demo_cdc"
    assert kcl_props["metricsLevel"] == "NONE"


# ---- spec_from_properties -------------------------------------------------------------------------------------

MINIMAL = {"streamName": "orders-cdc", "applicationName": "relay-app"}


def test_minimal_properties() -> None:
    spec, kcl_props, relay_props = spec_from_properties(dict(MINIMAL))
    assert spec == SourceSpec(stream="orders-cdc", app="relay-app")
    assert kcl_props == MINIMAL
    assert relay_props == {}


def test_standard_kcl_keys() -> None:
    spec, _, _ = spec_from_properties(
        {
            **MINIMAL,
            "regionName": "eu-central-1",
            "idleTimeBetweenReadsInMillis": "250",
            "workerId": "worker-7",
            "failoverTimeMillis": "30000",
            "maxLeasesForWorker": "4",
            "shardSyncIntervalMillis": "60000",
            "initialPositionInStream": "LATEST",
            "metricsLevel": "SUMMARY",  # read as kcl-metrics, and kept for the KCL
        }
    )
    assert (spec.region, spec.batch_size, spec.idle_sleep, spec.worker_id) == ("eu-central-1", 100, 0.25, "worker-7")
    assert (spec.failover_time, spec.max_leases, spec.shard_sync_interval) == (30.0, 4, 60.0)
    assert spec.start == "latest"
    assert spec.endpoint_url is None


def test_worker_identifier_key() -> None:
    spec, _, _ = spec_from_properties({**MINIMAL, "workerIdentifier": "w-9"})
    assert spec.worker_id == "w-9"


@pytest.mark.parametrize(("position", "start"), [("TRIM_HORIZON", "earliest"), ("latest", "latest")])
def test_initial_position_names(position: str, start: str) -> None:
    spec, _, _ = spec_from_properties({**MINIMAL, "initialPositionInStream": position})
    assert spec.start == start


def test_at_timestamp_keys() -> None:
    spec, _, _ = spec_from_properties(
        {**MINIMAL, "initialPositionInStream": "AT_TIMESTAMP", "initialPositionInStreamExtended": "1795773600"}
    )
    assert spec.start == "at-timestamp"
    assert spec.timestamp == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def test_extended_position_alone_means_at_timestamp() -> None:
    spec, _, _ = spec_from_properties({**MINIMAL, "initialPositionInStreamExtended": "1795773600"})
    assert spec.start == "at-timestamp"
    assert spec.timestamp == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def test_relay_keys_are_the_url_options() -> None:
    spec, kcl_props, relay_props = spec_from_properties(
        {
            **MINIMAL,
            "kclrelay.table": "testdrive.orders",
            "kclrelay.buffer-time": "2.5",
            "kclrelay.ttl": "ignore",
            "kclrelay.once": "true",
            "kclrelay.route-tables": "true",
            "kclrelay.tombstone-retention": "7200",
            "kclrelay.batch-size": "9",
            "kclrelay.start": "seqno-after",
            "kclrelay.seqno": "12345",
        }
    )
    assert (spec.buffer_time, spec.ttl, spec.once, spec.route_tables) == (2.5, "ignore", True, True)
    assert (spec.tombstone_retention, spec.batch_size, spec.start, spec.seqno) == (7200.0, 9, "seqno-after", "12345")
    assert relay_props["table"] == "testdrive.orders"
    assert relay_props["ttl"] == "ignore"
    assert kcl_props == MINIMAL


def test_a_relay_key_and_its_kcl_key_together_are_refused() -> None:
    # idleTimeBetweenReadsInMillis is read as idle-sleep: with kclrelay.idle-sleep too there are two truths.
    with pytest.raises(SourceError, match=r"sets both idleTimeBetweenReadsInMillis and kclrelay\.idle-sleep: keep one"):
        spec_from_properties({**MINIMAL, "idleTimeBetweenReadsInMillis": "500", "kclrelay.idle-sleep": "1"})
    spec, _, _ = spec_from_properties({**MINIMAL, "kclrelay.idle-sleep": "1"})
    assert spec.idle_sleep == 1.0


def test_max_records_is_the_kcls_and_batch_size_ours() -> None:
    # maxRecords means what it means to the KCL (records per GetRecords) and reaches it as it is; the database
    # batch is kclrelay.batch-size. Both together are two settings, not two truths.
    spec, kcl_props, _ = spec_from_properties({**MINIMAL, "maxRecords": "500", "kclrelay.batch-size": "70"})
    assert (spec.batch_size, kcl_props["maxRecords"]) == (70, "500")


def test_idle_time_between_reads_becomes_idle_sleep_and_never_reaches_the_kcl_raw() -> None:
    # The file's value is the pause at the tip (idle-sleep); the KCL gets it rendered by polling_properties, so a
    # backlog is still read at the KCL's floor instead of once per idleTimeBetweenReadsInMillis.
    spec, kcl_props, _ = spec_from_properties({**MINIMAL, "idleTimeBetweenReadsInMillis": "1500"})
    assert spec.idle_sleep == 1.5
    assert "idleTimeBetweenReadsInMillis" not in kcl_props
    props = build_properties(spec, "app")
    assert props["idleTimeBetweenReadsInMillis"] == "200"
    assert props["millisBehindLatestThresholdForReducedTps"] == "1500"


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:4566", "https://kinesis.eu-central-1.amazonaws.com", "https://vpce.example:8443"]
)
def test_kinesis_endpoint_keeps_its_scheme(endpoint: str) -> None:
    spec, kcl_props, _ = spec_from_properties({**MINIMAL, "kinesisEndpoint": endpoint})
    assert spec.endpoint_url == endpoint
    assert spec.stream == "orders-cdc" and not spec.is_file
    assert kcl_props["kinesisEndpoint"] == endpoint


def test_kinesis_endpoint_without_scheme_is_no_file_source() -> None:
    try:
        spec, _, _ = spec_from_properties({**MINIMAL, "kinesisEndpoint": "localhost:4566"})
    except SourceError:
        return
    assert spec.stream == "orders-cdc"
    assert not spec.is_file


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"maxRecords": "0"}, "maxRecords"),
        ({"maxRecords": "lots"}, "maxRecords"),
        ({"maxRecords": "10001"}, "maxRecords"),
        ({"idleTimeBetweenReadsInMillis": "soon"}, "idleTimeBetweenReadsInMillis"),
        ({"failoverTimeMillis": "1.5"}, "failoverTimeMillis"),
        ({"shardSyncIntervalMillis": "x"}, "shardSyncIntervalMillis"),
        ({"initialPositionInStreamExtended": "yesterday"}, "initialPositionInStreamExtended"),
        ({"initialPositionInStream": "SOMEWHERE"}, "for initialPositionInStream: expected TRIM_HORIZON or LATEST"),
        ({"initialPositionInStream": "AT_TIMESTAMP"}, "set initialPositionInStreamExtended = EPOCH_SECONDS"),
        ({"regionName": "Europe"}, "bad value 'Europe' for regionName: expected an AWS region"),
        ({"applicationName": "ab"}, "for applicationName: expected 3-255"),
        ({"kclrelay.ttl": "keep"}, "bad value 'keep' for kclrelay.ttl: expected one of delete, ignore"),
        ({"kclrelay.no-such-option": "1"}, "unknown key kclrelay.no-such-option"),
        ({"kclrelay.route-tables": "true", "kclrelay.source-table": "x"}, "exclude each other"),
        ({"kclrelay.start": "seqno-at"}, "kclrelay.start = seqno-at needs kclrelay.seqno = SEQUENCE_NUMBER"),
    ],
)
def test_bad_values_are_source_errors(extra: dict[str, str], needle: str) -> None:
    with pytest.raises(SourceError, match=needle):
        spec_from_properties({**MINIMAL, **extra})


@pytest.mark.parametrize(
    "props",
    [
        {"applicationName": "relay-app"},
        {"streamName": "", "applicationName": "relay-app"},
        {"streamName": "orders-cdc"},
        {"streamName": "orders-cdc", "applicationName": ""},
        {"kclrelay.table": "t"},
    ],
)
def test_stream_and_application_are_required(props: dict[str, str]) -> None:
    with pytest.raises(SourceError, match=r"names no (streamName|applicationName)"):
        spec_from_properties(props)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "region=eu-west-1&batch-size=7&idle-sleep=0.25&failover-time=2.5&shard-sync-interval=60",
        "worker-id=w1&max-leases=3&start=latest",
    ],
)
@pytest.mark.parametrize("base", [AWS, EMULATOR])
def test_build_then_read_back(tmp_path: Path, base: str, query: str) -> None:
    """What build_properties writes, spec_from_properties reads back as the same KCL settings.

    batch-size is not one of them (it never reaches the KCL): it comes back as the default.
    """
    spec = dataclasses.replace(parse_source(f"{base}?{query}" if query else base), app="relay-app")
    path = write_properties(tmp_path / "kcl.properties", build_properties(spec, "relay-app"))
    again, _, _ = spec_from_properties(read_properties(path))
    assert again == dataclasses.replace(spec, batch_size=SourceSpec().batch_size)


def test_build_then_read_back_at_timestamp(tmp_path: Path) -> None:
    spec = parse_source(f"{AWS}?start=at-timestamp&timestamp=2026-11-27T10:00:00Z&app=relay-app")
    path = write_properties(tmp_path / "kcl.properties", build_properties(spec, "relay-app"))
    again, _, _ = spec_from_properties(read_properties(path))
    assert again == spec


# ---- a properties file checked like a URL: unknown keys, the file, the line, the file's words --------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orders.properties"
    path.write_text(text)
    return path


HEAD = "# a worker\nstreamName = orders-cdc\napplicationName = relay-app\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("initialPositionInStrem = LATEST", "unknown key initialPositionInStrem; did you mean initialPositionInStream"),
        ("failovertimemillis = 5000", "unknown key failovertimemillis; did you mean failoverTimeMillis?"),
        ("kclrelay.batchsize = 10", "unknown key kclrelay.batchsize; did you mean kclrelay.batch-size?"),
        ("kclrelay.buffer_time = 1", "unknown key kclrelay.buffer_time; did you mean kclrelay.buffer-time?"),
        ("batch-size = 10", "unknown key batch-size; did you mean kclrelay.batch-size?"),
        ("kclrelay.ttl = keep", "bad value 'keep' for kclrelay.ttl: expected one of delete, ignore"),
        ("failoverTimeMillis = soon", "bad value 'soon' for failoverTimeMillis: expected milliseconds"),
        ("kclrelay.batch-size = ten", "bad value 'ten' for kclrelay.batch-size: expected a whole number from 1 to "),
        ("kclrelay.buffer-time = soon", "bad value 'soon' for kclrelay.buffer-time: expected seconds, 0 or more"),
        ("kclrelay.metrics-port = http", "bad value 'http' for kclrelay.metrics-port: expected a TCP port from 1 "),
        ("streamName = other", "streamName is set again (first on line 2): keep one"),
        # BeanUtils matches a key exactly: the KCL would ignore these (measured with the 3.1.3 jars).
        ("StreamName = other", "unknown key StreamName; did you mean streamName? (the KCL matches keys case-sensi"),
        ("FailoverTimeMillis = 5", "unknown key FailoverTimeMillis; did you mean failoverTimeMillis? (the KCL match"),
        (
            "FanoutConfig.consumerName = c",
            "unknown key FanoutConfig.consumerName; did you mean fanoutConfig.consumerNa",
        ),
        (
            "fanoutConfig.ConsumerName = c",
            "unknown key fanoutConfig.ConsumerName; did you mean fanoutConfig.consumerNa",
        ),
    ],
)
def test_a_bad_key_names_the_file_the_line_and_the_key(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, HEAD + "\n" + line + "\n")
    with pytest.raises(SourceError) as error:
        spec_from_properties(read_properties_file(path))
    assert str(error.value).startswith(f"{path} line 5: {message}")
    assert "source option" not in str(error.value) and "?create" not in str(error.value)


def test_a_credentials_key_set_twice_as_the_kcl_reads_it_is_refused(tmp_path: Path) -> None:
    # KinesisClientLibConfigurator renames any AwsCredentialsProvider* spelling to awsCredentialsProvider*.
    path = write(tmp_path, HEAD + "AWSCredentialsProvider = A\nawsCredentialsProvider = B\n")
    with pytest.raises(SourceError) as error:
        read_properties_file(path)
    assert str(error.value) == (
        f"{path} line 5: awsCredentialsProvider (AWSCredentialsProvider, as the KCL reads it) is set again "
        "(first on line 4): keep one"
    )


def test_a_relay_key_set_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "kclrelay.batch-size = 10\n# later\nkclrelay.batch-size = 20\n")
    with pytest.raises(SourceError) as error:
        read_properties_file(path)
    assert str(error.value) == f"{path} line 6: kclrelay.batch-size is set again (first on line 4): keep one"


def test_a_combination_is_said_in_the_files_words(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "kclrelay.seqno = 42\n")
    expected = r": kclrelay\.seqno needs kclrelay\.start = seqno-at or kclrelay\.start = seqno-after$"
    with pytest.raises(SourceError, match=expected):
        spec_from_properties(read_properties_file(path))


@pytest.mark.parametrize("template", sorted((Path(__file__).parents[2] / "properties").glob("*.properties")))
def test_the_templates_pass(template: Path) -> None:
    spec, _kcl, _relay = spec_from_properties(read_properties_file(template))
    assert spec.stream and spec.from_properties


def test_every_kcl_key_and_nested_client_settings_pass() -> None:
    props = {**MINIMAL, "cloudWatchClient.endpointOverride": "http://localhost:4566", "AWSCredentialsProvider": "x"}
    props |= {key: "1" for key in ("maxLeasesToStealAtOneTime", "parentShardPollIntervalMillis", "maxActiveThreads")}
    props |= {"fanoutConfig.consumerName": "c", "AWSCredentialsProviderDynamoDB": "x", "kinesisClient.region": "r"}
    spec_from_properties(props)
    for key in KCL_KEYS:
        check_keys(PropertiesFile(Path("p"), {key: "1"}))
    assert not KCL_FANOUT_KEYS & KCL_KEYS  # FanoutConfigBean is not flattened (tests/integration/test_kcl_keys.py)


@pytest.mark.parametrize("name", sorted(KCL_FANOUT_KEYS))
def test_a_fanout_key_passes_nested_only(tmp_path: Path, name: str) -> None:
    # KCL 3.1.3 does not flatten FanoutConfigBean: BeanUtils finds no top-level setter and skips the key silently.
    check_keys(PropertiesFile(Path("p"), {f"fanoutConfig.{name}": "1"}))
    path = write(tmp_path, HEAD + f"{name} = 1\n")
    with pytest.raises(SourceError) as error:
        spec_from_properties(read_properties_file(path))
    assert str(error.value) == (
        f"{path} line 4: {name} is fanoutConfig.{name} in KCL 3.1.3 (at top level the KCL ignores it)"
    )
    assert not is_kcl_key(name) and is_kcl_key(f"fanoutConfig.{name}")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("fanoutConfig.consumerNme", "unknown key fanoutConfig.consumerNme; did you mean fanoutConfig.consumerName? ("),
        ("fanoutConfig.consumerarn", "unknown key fanoutConfig.consumerarn; did you mean fanoutConfig.consumerArn? ("),
        (
            "fanoutConfig.maxRecords",
            "unknown key fanoutConfig.maxRecords (FanoutConfigBean's keys: fanoutConfig.consumerArn, ",
        ),
        ("consumerNme", "unknown key consumerNme; did you mean fanoutConfig.consumerName? (neither a KCL 3.1.3 key"),
        ("pollingConfig.maxRecords", "pollingConfig.maxRecords: write maxRecords (the same KCL 3.1.3 setting, which "),
        ("pollingConfig.bogus", "unknown key pollingConfig.bogus (neither a KCL 3.1.3 key nor kclrelay.*)"),
        ("kinesisCredentialsProvider.region", "unknown key kinesisCredentialsProvider.region"),
        ("awsCredentialsProviderKinesis", "unknown key awsCredentialsProviderKinesis"),
        ("endpointForClient", "unknown key endpointForClient"),  # a private helper of the KCL, no property
        ("regionForClient", "unknown key regionForClient"),
    ],
)
def test_a_key_the_kcl_ignores_is_refused(key: str, message: str) -> None:
    with pytest.raises(SourceError) as error:
        check_keys(PropertiesFile(Path("p"), {key: "1"}, {key: 3}))
    assert str(error.value).startswith(f"p line 3: {message}")
    assert not is_kcl_key(key)


def test_worker_metrics_report_every_half_failover_time_at_least_a_second() -> None:
    assert worker_metrics_report_millis(10.0) == 5000
    assert worker_metrics_report_millis(6.0) == 3000
    assert worker_metrics_report_millis(1.0) == 1000
