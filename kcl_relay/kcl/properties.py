"""SourceSpec -> the KCL MultiLangDaemon's properties. Never secrets: credentials reach the JVM by environment."""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from kcl_relay.source.url import SCHEME, SourceError, SourceSpec, parse_source

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


# The leader rebalances load every this many assignment runs (default 3, i.e. every 60 s): once a minute still, so
# that worker metrics (reported every 30 s) are fresh between two rebalancing passes.
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
        **polling_properties(spec.idle_sleep, spec.batch_size),
        # Empty calls let the processor flush buffered records on time and tell when a shard is caught up.
        "callProcessRecordsEvenForEmptyRecordList": "true",
        # Enhanced fan-out needs a consumer registration per application; polling works everywhere, emulators too.
        "retrievalMode": "POLLING",
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
    if spec.endpoint_url:
        props["kinesisEndpoint"] = spec.endpoint_url
        props["dynamoDBEndpoint"] = spec.dynamodb_endpoint or spec.endpoint_url
        # No CloudWatch on an emulator: publishing metrics would only fail and log.
        props["metricsLevel"] = "NONE"
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
    props: dict[str, str] = {}
    logical = ""
    for line in path.read_text().splitlines():
        stripped = line.lstrip()
        if not logical and (not stripped or stripped[0] in "#!"):
            continue
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        if trailing % 2:  # an odd number of backslashes continues the line
            logical += stripped[:-1]
            continue
        key, value = _split_property(logical + stripped)
        props[key] = value
        logical = ""
    if logical:
        key, value = _split_property(logical)
        props[key] = value
    return props


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
# standard KCL key -> (source option, KCL value -> option value)
KCL_TO_OPTION = {
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
}


# Keys read as a source option and rendered our way (polling_properties): the file's raw value must not reach the KCL.
RENDERED_KCL_KEYS = frozenset({"idleTimeBetweenReadsInMillis", "millisBehindLatestThresholdForReducedTps"})


def _check_max_records(value: str) -> None:
    """maxRecords is the KCL's own (records per GetRecords, passed on as it is): only its range is ours to check."""
    if not (value.strip().isdigit() and 1 <= int(value) <= MAX_RECORDS_PER_CALL):
        raise SourceError(f"bad value {value!r} for maxRecords in the properties file: 1 to {MAX_RECORDS_PER_CALL}")


def spec_from_properties(props: dict[str, str]) -> tuple[SourceSpec, dict[str, str], dict[str, str]]:
    """A KCL properties file -> (SourceSpec, the KCL's own keys, our kclrelay.* keys).

    Our keys are the source URL options under the prefix `kclrelay.` (e.g. `kclrelay.buffer-time = 1.0`), plus
    `kclrelay.table`; they are validated by the same parser as the URL.
    """
    kcl_props = {key: value for key, value in props.items() if not key.startswith(RELAY_PREFIX)}
    relay_props = {key[len(RELAY_PREFIX) :]: value for key, value in props.items() if key.startswith(RELAY_PREFIX)}
    stream = kcl_props.get("streamName")
    if not stream:
        raise SourceError("the properties file names no streamName")
    if not kcl_props.get("applicationName"):
        raise SourceError("the properties file names no applicationName")
    for key, (option, _convert) in KCL_TO_OPTION.items():
        if kcl_props.get(key) and option in relay_props:  # the KCL would use one, the processor the other
            raise SourceError(f"the properties file sets both {key} and {RELAY_PREFIX}{option}: keep one")
    options: dict[str, str] = {}
    for key, (option, convert) in KCL_TO_OPTION.items():
        if kcl_props.get(key):
            try:
                value = convert(kcl_props[key])
            except ValueError:
                raise SourceError(f"bad value {kcl_props[key]!r} for {key} in the properties file") from None
            if option == "idle-sleep" and option in options:
                value = str(max(float(value), float(options[option])))
            options[option] = value
    if kcl_props.get("maxRecords"):
        _check_max_records(kcl_props["maxRecords"])
    if "timestamp" in options:  # the KCL's own way to start at a time: the extended key alone
        options["start"] = "at-timestamp"
    options.update({key: value for key, value in relay_props.items() if key != "table"})
    endpoint = kcl_props.get("kinesisEndpoint")
    host = urlsplit(endpoint).netloc if endpoint else "aws"
    if endpoint and (not host or urlsplit(endpoint).scheme not in ("http", "https")):
        raise SourceError(f"kinesisEndpoint must be an http:// or https:// URL, got {endpoint!r}")
    spec = parse_source(f"{SCHEME}://{host}/{quote(stream)}?{urlencode(options)}")
    if endpoint:
        spec = dataclasses.replace(spec, endpoint_url=endpoint)  # keep the user's scheme (http or https)
    kcl_props = {key: value for key, value in kcl_props.items() if key not in RENDERED_KCL_KEYS}
    return spec, kcl_props, relay_props
