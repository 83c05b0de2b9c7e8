"""The one table of options: every source and full-load option, declared once.

Each option has its URL name (`?name=value`), its properties key (`kclrelay.NAME`, and the standard KCL key it is
read from or becomes, where there is one), the CLI flag where there is one, its type (the parser), its default, its
scope and its help. SourceSpec, TableSpec, ProcessorConfig, PipelineOptions, redrive, the sink's writer and retry
take their defaults from here; the source URL's and the table URL's parsers, `--help`, the properties reader and
its checks use this table, and tests/unit/test_options.py fails when docs/options.md or the properties templates
drift from it. Light on purpose: `--help` and the sink import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

START_POSITIONS = ("earliest", "latest", "seqno-at", "seqno-after", "at-timestamp")
TTL_MODES = ("delete", "ignore")
DELETE_MODES = ("hard", "soft")  # kcl_relay.sink.dialect.DELETE_MODES (not imported: --help stays fast)
LOG_LEVELS = ("warn", "info", "debug")  # kcl_relay.logs knows what each means
KCL_METRICS_LEVELS = ("none", "summary", "detailed")  # the KCL's metricsLevel, lower case
CONSUMERS = ("polling", "fanout")  # the KCL's retrievalMode POLLING or FANOUT (kcl_relay.kcl.consumer)
STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in a value: it would reach the KCL properties file
APP_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")  # the KCL's lease table is named after the application
BIND_HOST = re.compile(r"[a-zA-Z0-9_.:-]{1,253}")  # a host name, IPv4 or IPv6 address to bind to
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
MAX_SEGMENTS = 100  # one thread (and one database connection) per segment

# The defaults more than one place needs (the sink's writer and retry policy, redrive, the processor's config).
TOMBSTONE_RETENTION = 86400.0  # seconds: the stream's default retention (24 h), how late an older write may arrive
RETRY_TIMEOUT = 300.0  # seconds: a database restart or failover fits; a dead one stops the worker

# Scopes: what an option is about.
SOURCE = "source"  # reaching the stream (or the table of a full load)
KCL = "KCL"  # the KCL worker: leases, start positions, how shards are read
PROCESSOR = "processor"  # the relay's own processing: batching, routing, logs, metrics
SINK = "sink"  # writing to the target database
SCOPES = (SOURCE, KCL, PROCESSOR, SINK)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _number(kind: Callable[[str], Any], text: str, expected: str) -> Any:
    """int(text) or float(text), with the user's words instead of Python's ("invalid literal for int() ...")."""
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(expected) from None


def _positive_int(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _number(int, text, f"expected a whole number from 1 to {limit}")
        if not 1 <= value <= limit:
            raise ValueError(f"expected a whole number from 1 to {limit}")
        return value

    return parse


def _seconds(text: str) -> float:
    value = _number(float, text, "expected seconds, 0 or more")
    if not 0 <= value <= 86400 * 365:  # also refuses nan
        raise ValueError("expected seconds, 0 or more")
    return value


MIN_TOMBSTONE_RETENTION = 3600.0


def _retention(text: str) -> float:
    value = _seconds(text)
    if value < MIN_TOMBSTONE_RETENTION:
        # A tombstone is what stops a late, older write (a redelivery after a restart or a lease move) from bringing
        # a removed item back; shorter than the time such a write can arrive late, it protects nothing.
        raise ValueError(
            f"at least {MIN_TOMBSTONE_RETENTION:.0f} seconds: tombstones stop late, older writes from bringing removed"
            " items back, which may arrive as late as the stream's retention (24 h by default)"
        )
    return value


def _port(text: str) -> int:
    value = _number(int, text, "expected a TCP port from 1 to 65535")
    if not 1 <= value <= 65535:
        raise ValueError("expected a TCP port from 1 to 65535")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _seqno(text: str) -> str:
    if not (text.isascii() and text.isdigit()) or len(text) > 128:
        raise ValueError("expected a Kinesis sequence number (digits)")
    return text


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expected an ISO-8601 time, e.g. 2026-11-27T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _name(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError(f"not a valid {what}")
        return text

    return parse


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError("expected http://HOST:PORT or https://HOST")
    return text.rstrip("/")


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _mapping_file(text: str) -> str:
    from kcl_relay.mapping.spec import load_mapping

    load_mapping(text)  # MappingError is a ValueError: one line, before anything starts
    return text


@dataclass(frozen=True)
class Option:
    """One option. `name` is the URL's name and, as `kclrelay.NAME`, the properties key."""

    name: str
    attr: str  # the field of SourceSpec / TableSpec (and ProcessorConfig, PipelineOptions where they have it)
    parse: Callable[[str], Any]  # the type: text -> value, ValueError in the user's words
    default: Any
    scope: str
    help: str
    kcl_key: str | None = None  # the standard KCL property it becomes (or is read from)
    cli: str | None = None  # the CLI flag of `kcl-relay run`, where there is one
    unit: str = ""  # of the default, as docs/options.md shows it ("s")
    shown_default: str | None = None  # the default in docs/options.md's words, when it is no plain value

    @property
    def properties_key(self) -> str:
        return f"kclrelay.{self.name}"

    def default_in_docs(self) -> str:
        """The default as docs/options.md's table writes it."""
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float):
            return f"{self.default:g} {self.unit}".strip()
        return "" if self.default is None else str(self.default)

    def default_in_help(self) -> str:
        """` (default X)` for --help, or nothing when there is no plain default."""
        if self.default is None:
            return ""
        return f" (default {str(self.default).lower() if isinstance(self.default, bool) else self.default})"


def _table(*options: Option) -> dict[str, Option]:
    return {option.name: option for option in options}


# The source URL's options (kinesis+dynamodb+cdc://, dynamodb+cdc://) and a properties file's kclrelay.* keys.
SOURCE_OPTIONS = _table(
    Option(
        "batch-size",
        "batch_size",
        _positive_int(10000),
        100,
        PROCESSOR,
        "records per database batch (not per GetRecords)",
    ),
    Option(
        "create", "create", _bool, False, SOURCE, "create the Kinesis stream upfront when missing, wait until ACTIVE"
    ),
    Option(
        "create-shards", "create_shards", _positive_int(500), 1, SOURCE, "shard count of a stream made by create=true"
    ),
    Option("region", "region", _name(REGION, "AWS region"), "us-east-1", SOURCE, "AWS region", kcl_key="regionName"),
    Option(
        "start",
        "start",
        _choice(START_POSITIONS),
        "earliest",
        KCL,
        "where to start on a shard without checkpoint",
        kcl_key="initialPositionInStream",
    ),
    Option("seqno", "seqno", _seqno, None, KCL, "sequence number for start=seqno-at / seqno-after"),
    Option(
        "timestamp",
        "timestamp",
        _timestamp,
        None,
        KCL,
        "ISO-8601 time for start=at-timestamp",
        kcl_key="initialPositionInStreamExtended",
    ),
    Option(
        "idle-sleep",
        "idle_sleep",
        _seconds,
        0.5,
        KCL,
        "seconds to wait after a read that reached the tip of a shard",
        kcl_key="millisBehindLatestThresholdForReducedTps",
        unit="s",
    ),
    Option(
        "buffer-time",
        "buffer_time",
        _seconds,
        0.5,
        PROCESSOR,
        "seconds to buffer records before writing them to the database",
        unit="s",
    ),
    Option("once", "once", _bool, False, PROCESSOR, "stop, exit 0, once every shard is caught up"),
    Option(
        "app",
        "app",
        _name(APP_NAME, "application name (3-255 of a-z A-Z 0-9 _ . -)"),
        None,
        KCL,
        "KCL application name, i.e. its lease table; by default derived: kcl-relay-STREAM-TABLE",
        kcl_key="applicationName",
        shown_default="`kcl-relay-STREAM-TABLE-HASH`",
    ),
    Option(
        "worker-id",
        "worker_id",
        _text,
        None,
        KCL,
        # kcl_relay.kcl.worker_id: the host name and the lowest slot no other live worker of the application holds.
        "KCL worker id (default: the host name and a slot number, HOSTNAME-SLOT, stable across restarts)",
        kcl_key="workerId",
        cli="--worker-id",
        shown_default="`HOSTNAME-SLOT`",
    ),
    Option(
        "failover-time",
        "failover_time",
        _seconds,
        10.0,
        KCL,
        "seconds before a dead worker's leases are taken over",
        kcl_key="failoverTimeMillis",
        unit="s",
    ),
    Option(
        "max-leases",
        "max_leases",
        _positive_int(100000),
        None,
        KCL,
        "at most this many shards per worker; by default no limit",
        kcl_key="maxLeasesForWorker",
        shown_default="unlimited",
    ),
    Option(
        "shard-sync-interval",
        "shard_sync_interval",
        _seconds,
        10.0,
        KCL,
        "seconds between shard discoveries",
        kcl_key="shardSyncIntervalMillis",
        unit="s",
    ),
    Option(
        "ttl",
        "ttl",
        _choice(TTL_MODES),
        "delete",
        PROCESSOR,
        "TTL expiries (REMOVE by dynamodb.amazonaws.com): delete the row or ignore",
    ),
    Option(
        "route-tables",
        "route_tables",
        _bool,
        False,
        PROCESSOR,
        "write each DynamoDB table's records into a target table of its name",
    ),
    Option(
        "source-table",
        "source_table",
        _text,
        None,
        PROCESSOR,
        "the DynamoDB table expected in the stream (default: the first one seen)",
        shown_default="first seen",
    ),
    Option(
        "tombstone-retention",
        "tombstone_retention",
        _retention,
        TOMBSTONE_RETENTION,
        SINK,
        "seconds to keep delete tombstones, at least 3600 (match the stream's retention)",
        unit="s",
    ),
    Option(
        "delete-mode",
        "delete_mode",
        _choice(DELETE_MODES),
        "hard",
        SINK,
        "hard: a REMOVE deletes the row (tombstones keep older writes out); soft: the row stays, cdc_event = 'REMOVE'",
    ),
    Option(
        "retry-timeout",
        "retry_timeout",
        _seconds,
        RETRY_TIMEOUT,
        SINK,
        "seconds a failing database is retried (capped backoff) before the worker stops without checkpoint",
        unit="s",
    ),
    Option(
        "log-level",
        "log_level",
        _choice(LOG_LEVELS),
        "warn",
        PROCESSOR,
        "the KCL's and the processors' log files: warn, info (every shard start, flush, lease), debug",
    ),
    Option(
        "reset",
        "reset",
        _bool,
        False,
        KCL,
        "start over: delete the application's lease table (its checkpoints) first, so every shard starts at start=",
        cli="--reset",
    ),
    Option(
        "metrics-port",
        "metrics_port",
        _port,
        None,
        PROCESSOR,
        "serve Prometheus metrics (counters, batch latency, lag, leases) on this port at /metrics; by default none",
        shown_default="none",
    ),
    Option(
        "metrics-host",
        "metrics_host",
        _name(BIND_HOST, "host or address to bind"),
        "127.0.0.1",
        PROCESSOR,
        "address the metrics port binds",
    ),
    Option(
        "kcl-metrics",
        "kcl_metrics",
        _choice(KCL_METRICS_LEVELS),
        "none",
        KCL,
        "the KCL's own CloudWatch metrics (metricsLevel): none, summary or detailed",
        kcl_key="metricsLevel",
    ),
    Option(
        "consumer",
        "consumer",
        _choice(CONSUMERS),
        "polling",
        KCL,
        "how shards are read: polling (GetRecords) or fanout (enhanced fan-out through a stream consumer named"
        " after the application, registered once, deregistered by reset=true)",
        kcl_key="retrievalMode",
    ),
    Option(
        "mapping",
        "mapping",
        _mapping_file,
        None,
        SINK,
        "a TOML file of typed columns, include/exclude and table options (docs/type-mapping.md)",
        shown_default="none",
    ),
    Option(
        "dynamodb-endpoint",
        "dynamodb_endpoint",
        _http_url,
        None,
        SOURCE,
        "DynamoDB endpoint of the KCL lease table when it is not the stream's; by default the same",
        kcl_key="dynamoDBEndpoint",
        shown_default="the stream's endpoint",
    ),
)

OWN_STREAM = ":dynamodb"  # stream= of the table's own DynamoDB stream: a colon is in no Kinesis stream name


def _stream_name(text: str) -> str:
    if text == OWN_STREAM:
        return text
    return _name(STREAM_NAME, f"Kinesis stream name (1-128 of a-z A-Z 0-9 _ . -) or {OWN_STREAM}")(text)


# The table URL's own options (dynamodb://, a full load); the stream's it shares are the same declarations.
TABLE_OPTIONS = _table(
    SOURCE_OPTIONS["region"],
    Option(
        "segments",
        "segments",
        _positive_int(MAX_SEGMENTS),
        4,
        SOURCE,
        "parallel Scan segments (TotalSegments), each read and written by its own thread",
    ),
    Option(
        "consistent-read",
        "consistent_read",
        _bool,
        False,
        SOURCE,
        "strongly consistent Scan reads (twice the read capacity); see docs/full-load.md",
    ),
    Option(
        "page-size",
        "page_size",
        _positive_int(100000),
        None,
        SOURCE,
        "items per Scan request (Limit); by default DynamoDB's 1 MB pages",
        shown_default="DynamoDB's 1 MB pages",
    ),
    Option(
        "batch-size",
        "batch_size",
        _positive_int(10000),
        500,
        PROCESSOR,
        "items per database batch (with stream=: records, too)",
    ),
    Option(
        "prune",
        "prune",
        _bool,
        True,
        SINK,
        "delete target rows the scan did not find and no newer change wrote (false for a target that keeps rows of "
        "deleted items on purpose; with ttl=ignore it defaults to false)",
        shown_default="true (false with `ttl=ignore`)",
    ),
    SOURCE_OPTIONS["mapping"],
    SOURCE_OPTIONS["tombstone-retention"],
    SOURCE_OPTIONS["delete-mode"],
    Option(
        "stream",
        "stream_name",
        _stream_name,
        None,
        SOURCE,
        f"Kinesis stream of the table's changes, or {OWN_STREAM} for the table's DynamoDB stream: full load, then "
        "follow the stream (see below)",
    ),
)


def default(name: str, table: dict[str, Option] = SOURCE_OPTIONS) -> Any:
    """An option's default, for a dataclass field: `batch_size: int = default("batch-size")`."""
    return table[name].default


@dataclass(frozen=True, eq=False, kw_only=True)
class ProcessorOptions:
    """The source options the record processors run with, declared once for the two that hold them: SourceSpec (what
    the source URL says) and ProcessorConfig (what the supervisor hands its processors), which relay.py fills from
    it. Keyword-only, so a subclass may add fields without a default; eq=False: each subclass says how it compares.
    """

    batch_size: int = default("batch-size")
    buffer_time: float = default("buffer-time")
    # the KCL's pause after a read that reached the tip: for the processor, when the next delivery comes
    idle_sleep: float = default("idle-sleep")
    ttl: str = default("ttl")
    route_tables: bool = default("route-tables")
    source_table: str | None = default("source-table")
    tombstone_retention: float = default("tombstone-retention")
    delete_mode: str = default("delete-mode")
    retry_timeout: float = default("retry-timeout")
    start: str = default("start")
    seqno: str | None = default("seqno")
    log_level: str = default("log-level")  # warn, info, debug (kcl_relay.logs)
    mapping: str | None = default("mapping")  # the mapping file (kcl_relay/mapping), checked when the URL is parsed
