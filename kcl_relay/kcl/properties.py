"""SourceSpec -> the KCL MultiLangDaemon's properties. Never secrets: credentials reach the JVM by environment."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kcl_relay.kcl.consumer import CONSUMER_NAME_KEY, consumer_name
from kcl_relay.source.url import (
    CONTROL,
    DYNAMODB_STREAMS,
    OPTIONS,
    SourceError,
    SourceSpec,
    Words,
    check_combinations,
    check_stream_name,
    check_streams_start,
    closest,
    parse_option,
)

INITIAL_POSITION = {
    "earliest": "TRIM_HORIZON",
    "latest": "LATEST",
    "at-timestamp": "AT_TIMESTAMP",  # written as initialPositionInStreamExtended = EPOCH_SECONDS
    # The KCL knows no sequence-number start: it reads the shard from its beginning and the processor skips the
    # records before (or up to) that sequence number on the shard that holds it. See docs/options.md.
    "seqno-at": "TRIM_HORIZON",
    "seqno-after": "TRIM_HORIZON",
}
PROCESSOR_COMMAND = f"{sys.executable} -m kcl_relay.kcl.processor"
SHUTDOWN_GRACE_MILLIS = 20000  # SIGTERM -> every processor gets shutdown_requested and checkpoints

# Polling (KCL 3.1.3 PollingConfig, PrefetchRecordsPublisher, KinesisSleepTimeController; see docs/options.md).
# Before every GetRecords the KCL sleeps idleTimeBetweenReadsInMillis minus the time since the last call, whether or
# not that call returned records; and, while the last MillisBehindLatest is below
# millisBehindLatestThresholdForReducedTps, up to that threshold instead. So: read a backlog as fast as the KCL can
# (its floor, 200 ms, is also AWS's 5 reads/s per shard), and pause idle-sleep only once a read reached the tip.
# Records per call: enough that the 200 ms pause does not dominate a read of a backlog (5,000: up to 25,000
# records/s per shard, 25 times what writers can put into one), few enough that a delivery plus a database batch
# stay small in the processor, which parses a delivery's JSON message at once (10,000 records of ~600 B: 129 MB
# peak RSS at batch-size 10,000; 2,000: 82 MB) and in the JVM's prefetch queue (3 results per shard).
RECORDS_PER_CALL = 5000
RECORDS_PER_CALL_LARGE_BATCHES = 2000  # when batch-size is above RECORDS_PER_CALL
MAX_RECORDS_PER_CALL = 10000  # the KCL's and AWS's limit, for a maxRecords in a properties file
MIN_MILLIS_BETWEEN_READS = 200
# Lease assignment (KCL 3 LeaseAssignmentManager on the leader; each worker discovers its leases at half that
# interval). The KCL's default, twice failoverTimeMillis (20 s), makes a fresh or restarted worker wait up to 30 s
# for its first lease; a second costs the leader a lease table scan per second.
LEASE_ASSIGNMENT_INTERVAL_MILLIS = 1000
# A worker is assignable once it has reported its metrics: the first report comes after twice this (default 1000).
WORKER_METRICS_CAPTURE_MILLIS = 200
# A worker counts as alive for the leader's lease assignment until its metrics entry is two reports old (KCL 3.1.3
# LeaseAssignmentManager: DEFAULT_NO_OF_SKIP_STAT_FOR_DEAD_WORKER_THRESHOLD x workerMetricsReporterFreqInMillis). At
# the KCL's default report interval, 30 s, a crashed worker stayed "alive" 30-60 s, and its expired leases went to
# nobody until then, whatever failoverTimeMillis said (measured: 31 s after SIGKILL with failover-time=6). Reporting
# every half failover time makes a dead worker inactive when its leases expire; the cost is one small DynamoDB
# write per worker per report.
MIN_WORKER_METRICS_REPORT_MILLIS = 1000


def worker_metrics_report_millis(failover_time: float) -> int:
    return max(MIN_WORKER_METRICS_REPORT_MILLIS, round(failover_time * 1000 / 2))


# The leader rebalances load every this many assignment runs (the KCL's default 3 runs of 20 s, i.e. every 60 s):
# once a minute still, as with the KCL's defaults. A worker that joins while every lease is held gets one only at
# such a pass (docs/faults.md, scenario a).
VARIANCE_BALANCING_FREQUENCY = 60


def build_properties(spec: SourceSpec, application_name: str) -> dict[str, str]:
    """The multilang properties for one worker of `application_name`."""
    props = {
        "executableName": PROCESSOR_COMMAND,
        "processingLanguage": f"python/{sys.version_info.major}.{sys.version_info.minor}",
        "streamName": spec.stream or "",
        "applicationName": application_name,
        "regionName": spec.region,
        "AwsCredentialsProvider": "DefaultCredentialsProvider",
        "initialPositionInStream": INITIAL_POSITION[spec.start],
        **(polling_properties(spec.idle_sleep, spec.batch_size) if spec.consumer == "polling" else {}),
        # Empty calls let the processor flush buffered records on time and tell when a shard is caught up.
        "callProcessRecordsEvenForEmptyRecordList": "true",
        # Polling works everywhere, emulators too; fanout reads through the application's registered stream consumer
        # (named here; kcl_relay.kcl.consumer registers it and adds its ARN before the KCL starts).
        "retrievalMode": spec.consumer.upper(),
        **({CONSUMER_NAME_KEY: consumer_name(application_name)} if spec.consumer == "fanout" else {}),
        "shutdownGraceMillis": str(SHUTDOWN_GRACE_MILLIS),
        "failoverTimeMillis": str(round(spec.failover_time * 1000)),
        "shardSyncIntervalMillis": str(round(spec.shard_sync_interval * 1000)),
        "leaseAssignmentIntervalMillis": str(LEASE_ASSIGNMENT_INTERVAL_MILLIS),
        "inMemoryWorkerMetricsCaptureFrequencyMillis": str(WORKER_METRICS_CAPTURE_MILLIS),
        "workerMetricsReporterFreqInMillis": str(worker_metrics_report_millis(spec.failover_time)),
        "varianceBalancingFrequency": str(VARIANCE_BALANCING_FREQUENCY),
    }
    if spec.timestamp:
        # The KCL refuses initialPositionInStream = AT_TIMESTAMP: the extended key alone sets it, in epoch seconds.
        del props["initialPositionInStream"]
        props["initialPositionInStreamExtended"] = str(int(spec.timestamp.timestamp()))
    if spec.worker_id:
        props["workerId"] = spec.worker_id
    if spec.max_leases:
        props["maxLeasesForWorker"] = str(spec.max_leases)
    # The KCL's own CloudWatch metrics are opt-in (kcl-metrics): they cost CloudWatch calls and money per worker,
    # and the relay serves its own (metrics-port). The KCL's default would be DETAILED.
    props["metricsLevel"] = spec.kcl_metrics.upper()
    if spec.endpoint_url:
        props["kinesisEndpoint"] = spec.endpoint_url
        props["dynamoDBEndpoint"] = spec.dynamodb_endpoint or spec.endpoint_url
        if spec.kcl_metrics != "none":
            # No CloudWatch endpoint key exists; the nested client override does it (LocalStack and moto serve it).
            props["cloudWatchClient.endpointOverride"] = spec.endpoint_url
    elif spec.dynamodb_endpoint:
        props["dynamoDBEndpoint"] = spec.dynamodb_endpoint
    return props


def records_per_call(batch_size: int) -> int:
    """GetRecords' Limit: the processor holds up to a database batch and a delivery at once."""
    return RECORDS_PER_CALL if batch_size <= RECORDS_PER_CALL else RECORDS_PER_CALL_LARGE_BATCHES


def polling_properties(idle_sleep: float, batch_size: int) -> dict[str, str]:
    """idle-sleep (seconds to wait after reading up to the tip) and batch-size -> the KCL's polling keys."""
    idle_millis = round(idle_sleep * 1000)
    props = {
        "maxRecords": str(records_per_call(batch_size)),
        "idleTimeBetweenReadsInMillis": str(MIN_MILLIS_BETWEEN_READS),
    }
    if idle_millis > MIN_MILLIS_BETWEEN_READS:
        props["millisBehindLatestThresholdForReducedTps"] = str(idle_millis)
    return props


ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}
UNESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}


def _escape(text: str, is_key: bool) -> str:
    """java.util.Properties escaping: a value can never end its line or start another property."""
    escaped = "".join(ESCAPES.get(char, char) for char in text)
    if is_key:
        escaped = "".join(f"\\{char}" if char in "=: #!" else char for char in escaped)
    elif escaped[:1] in (" ", "\t"):
        escaped = "\\" + escaped
    return escaped


def render(props: dict[str, str]) -> str:
    return "".join(f"{_escape(key, True)} = {_escape(value, False)}\n" for key, value in props.items())


def write_properties(path: Path, props: dict[str, str]) -> Path:
    """Write the file readable by its owner only (it holds no secret, but names the infrastructure)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render(props))
    os.chmod(path, 0o600)
    return path


def read_properties(path: Path) -> dict[str, str]:
    """Read a Java properties file: comments (# !), separators = : or blanks, escapes, continued lines."""
    return read_properties_file(path).values


@dataclass(frozen=True)
class PropertiesFile:
    """A properties file's keys and values, and the line each key was set on (for messages that point at it)."""

    path: Path
    values: dict[str, str]
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path} line {line}" if line else str(self.path)


def read_properties_file(path: Path) -> PropertiesFile:
    """Read a properties file; a key set twice is a SourceError (Java keeps the last silently, as URLs do not)."""
    props: dict[str, str] = {}
    lines: dict[str, int] = {}
    seen: dict[str, str] = {}  # the key as the KCL matches it (AwsCredentialsProvider* renamed) -> as written

    def add(key: str, value: str, line: int) -> None:
        matched = as_kcl_reads(key)
        if matched in seen:
            earlier = seen[matched]
            same = f"{key}" if earlier == key else f"{key} ({earlier}, as the KCL reads it)"
            raise SourceError(f"{path} line {line}: {same} is set again (first on line {lines[earlier]}): keep one")
        seen[matched] = key
        props[key], lines[key] = value, line

    logical, first_line = "", 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.lstrip()
        if not logical and (not stripped or stripped[0] in "#!"):
            continue
        if not logical:
            first_line = number
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        if trailing % 2:  # an odd number of backslashes continues the line
            logical += stripped[:-1]
            continue
        add(*_split_property(logical + stripped), first_line)
        logical = ""
    if logical:
        add(*_split_property(logical), first_line)
    return PropertiesFile(path, props, lines)


def _split_property(line: str) -> tuple[str, str]:
    key: list[str] = []
    index = 0
    while index < len(line):  # the key ends at the first unescaped separator
        char = line[index]
        if char == "\\" and index + 1 < len(line):
            key.append(UNESCAPES.get(line[index + 1], line[index + 1]))
            index += 2
            continue
        if char in "=: \t\f":
            break
        key.append(char)
        index += 1
    rest = line[index:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return "".join(key), _unescape(rest.rstrip())  # unlike Java, forgive trailing blanks: they are never meant


def _unescape(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text):
            out.append(UNESCAPES.get(text[index + 1], text[index + 1]))
            index += 2
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


RELAY_PREFIX = "kclrelay."
# kclrelay.NAME: the source options, the target table, and the DynamoDB table whose own stream is read (instead of
# streamName: kcl-relay finds the stream's ARN, which changes whenever the stream is enabled again).
RELAY_KEYS = (*OPTIONS, "table", "dynamodb-table")

KCL_VERSION = "3.1.3"
# The keys the KCL 3.1.3 MultiLangDaemon reads at the top level of a properties file, as its configurator
# (KinesisClientLibConfigurator: BeanUtilsBean.setProperty on MultiLangDaemonConfiguration) resolves them: the
# configuration's setters, among them those it delegates to the beans it flattens (PollingConfigBean,
# GracefulLeaseHandoffConfigBean, WorkerUtilizationAwareAssignmentConfigBean, WorkerMetricStatsTableConfigBean,
# CoordinatorStateTableConfigBean), plus MultiLangDaemonConfig's own executableName, processingLanguage and
# maxActiveThreads. BeanUtils skips any other key silently. Kept here rather than asked of the jars: the check runs
# before any JVM starts (and must stay fast), also where the stock daemon runs. tests/integration/test_kcl_keys.py
# compares these lists with what the jars say (the launcher's --kcl-keys): a KCL that adds, drops or moves a key
# fails that test.
KCL_KEYS = frozenset(
    """allowThroughputOvershoot applicationName awsCredentialsProvider awsCredentialsProviderCloudWatch
    awsCredentialsProviderDynamoDB callProcessRecordsEvenForEmptyRecordList cleanupLeasesUponShardCompletion
    clientVersionConfig coordinatorStateBillingMode coordinatorStateDeletionProtectionEnabled
    coordinatorStatePointInTimeRecoveryEnabled coordinatorStateReadCapacity coordinatorStateTableName
    coordinatorStateTags coordinatorStateWriteCapacity dampeningPercentage disableWorkerMetrics dynamoDBEndpoint
    enablePriorityLeaseAssignment executableName failoverTimeMillis
    gracefulLeaseHandoffTimeoutMillis idleTimeBetweenReadsInMillis ignoreUnexpectedChildShards
    inMemoryWorkerMetricsCaptureFrequencyMillis initialLeaseTableReadCapacity initialLeaseTableWriteCapacity
    initialPositionInStream initialPositionInStreamExtended isGracefulLeaseHandoffEnabled kinesisEndpoint
    leaseAssignmentIntervalMillis leaseTableDeletionProtectionEnabled leaseTablePitrEnabled
    listShardsBackoffTimeInMillis logWarningForTaskAfterMillis maxActiveThreads
    maxGetRecordsThreadPool maxLeaseRenewalThreads maxLeasesForWorker
    maxLeasesToStealAtOneTime maxListShardsRetryAttempts maxRecords maxThroughputPerHostKBps metricsBufferTimeMillis
    metricsEnabledDimensions metricsLevel metricsMaxQueueSize millisBehindLatestThresholdForReducedTps
    noOfPersistedMetricsPerWorkerMetrics parentShardPollIntervalMillis processingLanguage reBalanceThresholdPercentage
    regionName retrievalMode
    retryGetRecordsInSeconds schedulerInitializationBackoffTimeMillis shardPrioritization shardSyncIntervalMillis
    shutdownGraceMillis skipShardSyncAtWorkerInitializationIfLeasesExist staleWorkerMetricsEntryCleanupDuration
    streamArn streamName tableName taskBackoffTimeMillis timeoutInSeconds validateSequenceNumberBeforeCheckpointing
    varianceBalancingFrequency workerId workerIdentifier workerMetricsBillingMode
    workerMetricsDeletionProtectionEnabled workerMetricsEMAAlpha workerMetricsPointInTimeRecoveryEnabled
    workerMetricsReadCapacity workerMetricsReporterFreqInMillis workerMetricsTableName workerMetricsTags
    workerMetricsWriteCapacity""".split()  # noqa: SIM905 - a list as the jar has it, easier to compare
)
# FanoutConfigBean, which 3.1.3 does not flatten: only fanoutConfig.NAME sets these (at top level, ignored).
FANOUT_BEAN = "fanoutConfig"
KCL_FANOUT_KEYS = frozenset(
    {
        "consumerArn",
        "consumerName",
        "maxDescribeStreamConsumerRetries",
        "maxDescribeStreamSummaryRetries",
        "registerStreamConsumerRetries",
        "retryBackoffMillis",
    }
)
FANOUT_NAMES = sorted(f"{FANOUT_BEAN}.{name}" for name in KCL_FANOUT_KEYS)
# The flattened beans are reachable nested as well (pollingConfig.maxRecords sets maxRecords): kcl-relay checks and
# reads their keys at the top level, so it refuses the nested spelling, naming the top-level key.
KCL_FLATTENED_BEANS = frozenset(
    {
        "pollingConfig",
        "gracefulLeaseHandoffConfigBean",
        "workerUtilizationAwareAssignmentConfigBean",
        "workerMetricStatsTableConfigBean",
        "coordinatorStateTableConfigBean",
    }
)
# BuilderDynaBeans: NAME.SETTING is a setting of an AWS SDK client builder (cloudWatchClient.endpointOverride). The
# credentials providers' builders are set through AwsCredentialsProvider* (refused nested).
KCL_CLIENT_BUILDERS = frozenset({"kinesisClient", "dynamoDbClient", "cloudWatchClient"})
KCL_CREDENTIALS_BUILDERS = frozenset(
    {"kinesisCredentialsProvider", "dynamoDBCredentialsProvider", "cloudWatchCredentialsProvider"}
)
CREDENTIALS_KEY = re.compile("awscredentialsprovider", re.IGNORECASE)


def as_kcl_reads(key: str) -> str:
    """The name BeanUtils gets for a key: KinesisClientLibConfigurator.processKey renames AwsCredentialsProvider*."""
    return CREDENTIALS_KEY.sub("awsCredentialsProvider", key) if CREDENTIALS_KEY.match(key) else key


def kcl_key_error(key: str) -> str | None:
    """None for a key the KCL reads (and kcl-relay passes on); else what is wrong, with the fix when there is one."""
    name = as_kcl_reads(key)
    if name in KCL_KEYS:
        return None
    bean, dot, setting = name.partition(".")
    if dot and bean in KCL_CLIENT_BUILDERS:
        return None
    if dot and bean == FANOUT_BEAN:
        if setting in KCL_FANOUT_KEYS:
            return None
        return f"unknown key {key}{_nearest(key, FANOUT_NAMES)} (FanoutConfigBean's keys: {', '.join(FANOUT_NAMES)})"
    if dot and bean in KCL_FLATTENED_BEANS and setting in KCL_KEYS:
        return f"{key}: write {setting} (the same KCL {KCL_VERSION} setting, which kcl-relay checks at the top level)"
    if name in KCL_FANOUT_KEYS:
        return f"{key} is {FANOUT_BEAN}.{name} in KCL {KCL_VERSION} (at top level the KCL ignores it)"
    lowered = name[:1].lower() + name[1:]
    if lowered != name and not kcl_key_error(lowered):  # BeanUtils matches a key exactly (measured: KCL 3.1.3)
        return f"unknown key {key}; did you mean {lowered}? (the KCL matches keys case-sensitively: it ignores {key})"
    relay_names = [f"{RELAY_PREFIX}{relay}" for relay in RELAY_KEYS]
    hint = (
        _nearest(key, sorted(KCL_KEYS) + FANOUT_NAMES + relay_names)
        or (_nearest(f"{FANOUT_BEAN}.{name}", FANOUT_NAMES) if closest(name, sorted(KCL_FANOUT_KEYS)) else "")
        or _nearest(f"{RELAY_PREFIX}{key}", relay_names)
    )
    return f"unknown key {key}{hint} (neither a KCL {KCL_VERSION} key nor kclrelay.*)"


def is_kcl_key(key: str) -> bool:
    return kcl_key_error(key) is None


def _nearest(key: str, candidates: list[str]) -> str:
    """`; did you mean X?` for a likely typo, else nothing."""
    meant = closest(key, candidates)
    return f"; did you mean {meant}?" if meant else ""


def check_keys(source: PropertiesFile) -> None:
    """Every key is one the KCL or kcl-relay knows, and every kclrelay.* value parses: else one line naming the
    file, the line and the key (a typo the KCL would silently ignore stops the worker before anything starts)."""
    relay_names = [f"{RELAY_PREFIX}{name}" for name in RELAY_KEYS]
    for key, value in source.values.items():
        where = source.where(key)
        if key.startswith(RELAY_PREFIX):
            name = key[len(RELAY_PREFIX) :]
            if name not in RELAY_KEYS:
                raise SourceError(
                    f"{where}: unknown key {key}{_nearest(key, relay_names)} (kcl-relay's keys: "
                    f"{', '.join(relay_names)})"
                )
            if CONTROL.search(value):
                raise SourceError(f"{where}: the value of {key} holds a control character")
            if name in OPTIONS:
                try:
                    OPTIONS[name][1](value)
                except ValueError as error:
                    raise SourceError(f"{where}: bad value {value!r} for {key}: {error}") from None
        else:
            fault = kcl_key_error(key)
            if fault:
                raise SourceError(f"{where}: {fault}")


# standard KCL key -> (source option, KCL value -> option value)
KCL_TO_OPTION: dict[str, tuple[str, Callable[[str], str]]] = {
    "regionName": ("region", str),
    # Both read back as idle-sleep (the larger one: what polling_properties writes); see RENDERED_KCL_KEYS.
    "idleTimeBetweenReadsInMillis": ("idle-sleep", lambda ms: str(int(ms) / 1000)),
    "millisBehindLatestThresholdForReducedTps": ("idle-sleep", lambda ms: str(int(ms) / 1000)),
    "applicationName": ("app", str),
    "workerId": ("worker-id", str),
    "workerIdentifier": ("worker-id", str),
    "failoverTimeMillis": ("failover-time", lambda ms: str(int(ms) / 1000)),
    "maxLeasesForWorker": ("max-leases", str),
    "shardSyncIntervalMillis": ("shard-sync-interval", lambda ms: str(int(ms) / 1000)),
    "initialPositionInStream": (
        "start",
        lambda p: {"TRIM_HORIZON": "earliest", "LATEST": "latest", "AT_TIMESTAMP": "at-timestamp"}.get(p.upper(), p),
    ),
    "initialPositionInStreamExtended": (
        "timestamp",
        lambda s: datetime.fromtimestamp(int(s), timezone.utc).isoformat(),
    ),
    "metricsLevel": ("kcl-metrics", str.lower),
    "retrievalMode": ("consumer", str.lower),  # DEFAULT (the KCL decides by the other keys) is refused
}


# What a KCL key read as a source option takes, in the KCL's words.
KCL_EXPECTED = {
    "regionName": "expected an AWS region, e.g. eu-central-1",
    "idleTimeBetweenReadsInMillis": "expected milliseconds, 0 or more",
    "millisBehindLatestThresholdForReducedTps": "expected milliseconds, 0 or more",
    "applicationName": "expected 3-255 of a-z A-Z 0-9 _ . -",
    "workerId": "expected a non-empty id",
    "workerIdentifier": "expected a non-empty id",
    "failoverTimeMillis": "expected milliseconds, 0 or more",
    "maxLeasesForWorker": "expected a whole number from 1 to 100000",
    "shardSyncIntervalMillis": "expected milliseconds, 0 or more",
    "initialPositionInStream": "expected TRIM_HORIZON or LATEST",
    "initialPositionInStreamExtended": "expected a time in epoch seconds",
    "metricsLevel": "expected NONE, SUMMARY or DETAILED",
    "retrievalMode": "expected POLLING or FANOUT",
}

# Keys read as a source option and rendered our way (polling_properties): the file's raw value must not reach the KCL.
RENDERED_KCL_KEYS = frozenset({"idleTimeBetweenReadsInMillis", "millisBehindLatestThresholdForReducedTps"})


def _check_max_records(value: str, where: str = "the properties file") -> None:
    """maxRecords is the KCL's own (records per GetRecords, passed on as it is): only its range is ours to check."""
    if not (value.strip().isdigit() and 1 <= int(value) <= MAX_RECORDS_PER_CALL):
        raise SourceError(f"{where}: bad value {value!r} for maxRecords: 1 to {MAX_RECORDS_PER_CALL}")


def _check_endpoint(endpoint: str, where: str) -> None:
    parts = urlsplit(endpoint)
    if not parts.netloc or parts.scheme not in ("http", "https"):
        raise SourceError(f"{where}: kinesisEndpoint must be an http:// or https:// URL, got {endpoint!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise SourceError(f"{where}: kinesisEndpoint has a bad port: {endpoint!r}") from None


def spec_from_properties(
    props: dict[str, str] | PropertiesFile,
) -> tuple[SourceSpec, dict[str, str], dict[str, str]]:
    """A KCL properties file -> (SourceSpec, the KCL's own keys, our kclrelay.* keys).

    Our keys are the source URL options under the prefix `kclrelay.` (e.g. `kclrelay.buffer-time = 1.0`), plus
    `kclrelay.table`; they are validated by the same parsers as the URL. Errors are one line in the file's words:
    the file, the line and the key (never the URL's option names).
    """
    source = props if isinstance(props, PropertiesFile) else PropertiesFile(Path("the properties file"), props)
    check_keys(source)
    values = source.values
    kcl_props = {key: value for key, value in values.items() if not key.startswith(RELAY_PREFIX)}
    relay_props = {key[len(RELAY_PREFIX) :]: value for key, value in values.items() if key.startswith(RELAY_PREFIX)}
    stream = kcl_props.get("streamName")
    dynamodb_table = relay_props.pop("dynamodb-table", None)
    if dynamodb_table and stream:
        raise SourceError(
            f"{source.where('streamName')}: sets both streamName and {RELAY_PREFIX}dynamodb-table: keep one "
            "(kcl-relay finds the table's stream itself)"
        )
    if not stream and not dynamodb_table:
        raise SourceError(f"{source.path} names no streamName (nor {RELAY_PREFIX}dynamodb-table)")
    if not kcl_props.get("applicationName"):
        raise SourceError(f"{source.path} names no applicationName")
    for key, (option, _convert) in KCL_TO_OPTION.items():
        if kcl_props.get(key) and option in relay_props:  # the KCL would use one, the processor the other
            raise SourceError(f"{source.where(key)}: sets both {key} and {RELAY_PREFIX}{option}: keep one")
    options: dict[str, str] = {}
    used: dict[str, str] = {name: f"{RELAY_PREFIX}{name}" for name in relay_props}  # option -> the file's key
    position = kcl_props.get("initialPositionInStream", "").upper()
    if position == "AT_TIMESTAMP" and not kcl_props.get("initialPositionInStreamExtended"):
        raise SourceError(
            f"{source.where('initialPositionInStream')}: initialPositionInStream = AT_TIMESTAMP needs the time: "
            "set initialPositionInStreamExtended = EPOCH_SECONDS instead"
        )
    for key, (option, convert) in KCL_TO_OPTION.items():
        if kcl_props.get(key):
            try:
                value = convert(kcl_props[key])
                OPTIONS[option][1](value)
            except (ValueError, OverflowError):
                raise SourceError(
                    f"{source.where(key)}: bad value {kcl_props[key]!r} for {key}: {KCL_EXPECTED[key]}"
                ) from None
            if option == "idle-sleep" and option in options:
                value = str(max(float(value), float(options[option])))
            options[option] = value
            used[option] = key
    if kcl_props.get("maxRecords"):
        _check_max_records(kcl_props["maxRecords"], source.where("maxRecords"))
    if "timestamp" in options:  # the KCL's own way to start at a time: the extended key alone
        options["start"] = "at-timestamp"
    options.update({key: value for key, value in relay_props.items() if key != "table"})
    endpoint = kcl_props.get("kinesisEndpoint")
    if endpoint:
        _check_endpoint(endpoint, source.where("kinesisEndpoint"))
    # Read into the settings directly, by the URL's own parsers and checks, in the file's words (`used`).
    streams = bool(dynamodb_table)
    words = Words(keys=used, prefix=RELAY_PREFIX)
    try:
        settings: dict[str, Any] = {}
        for option, raw in options.items():
            attr, value = parse_option(option, raw, streams=streams, words=words)
            settings[attr] = value
        if streams:
            settings["kind"] = DYNAMODB_STREAMS
            check_streams_start(settings, words)
        settings["stream"] = check_stream_name(dynamodb_table or stream or "", streams=streams)
        spec = SourceSpec(**settings, endpoint_url=endpoint or None, from_properties=True)  # the user's http or https
        check_combinations(spec, words)
    except SourceError as error:
        raise SourceError(f"{source.path}: {error}") from None
    kcl_props = {key: value for key, value in kcl_props.items() if key not in RENDERED_KCL_KEYS}
    return spec, kcl_props, relay_props
