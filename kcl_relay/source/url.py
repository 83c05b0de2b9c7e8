"""The source URL: `kinesis+dynamodb+cdc://[KEY:SECRET@]HOST[:PORT]/STREAM[?options]` -> a validated SourceSpec.

HOST `aws` means AWS's own endpoints of the region; any other HOST[:PORT] is one endpoint for Kinesis and for the
KCL's DynamoDB lease table (LocalStack style). An empty host with an absolute path is a file to replay:
`kinesis+dynamodb+cdc:///ABS/PATH.ndjson`. `dynamodb+cdc://[KEY:SECRET@]HOST[:PORT]/TABLE[?options]` reads the
table's own DynamoDB stream instead (source/dynamodb_streams.py), with the options that apply there.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kcl_relay.masking import masked_eq

SCHEME = "kinesis+dynamodb+cdc"
STREAMS_SCHEME = "dynamodb+cdc"  # the table's DynamoDB stream, read through the DynamoDB Streams Kinesis adapter
KINESIS = "kinesis"
DYNAMODB_STREAMS = "dynamodb-streams"
TABLE_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")
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


class SourceError(ValueError):
    """A bad source URL or option: reported as one line, exit code 2."""


@masked_eq  # an assertion diff of two credentials (or of specs holding them) never shows the secret
@dataclass(frozen=True, eq=False)
class Credentials:
    access_key_id: str  # not a secret (AWS shows it in CloudTrail): it tells which key is used
    secret_access_key: str = field(repr=False)

    def __repr__(self) -> str:  # never show the secret, not even in a traceback
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


@dataclass(frozen=True)
class SourceSpec:
    """Everything the relay needs to know about where records come from, validated."""

    stream: str | None = None  # None for a file replay
    path: str | None = None  # the NDJSON file of a replay
    endpoint_url: str | None = None  # None: AWS's endpoints
    dynamodb_endpoint: str | None = None  # the lease table's endpoint when it differs from endpoint_url
    credentials: Credentials | None = None  # None: the usual AWS chain
    region: str = "us-east-1"
    batch_size: int = 100
    create: bool = False
    create_shards: int = 1
    start: str = "earliest"
    seqno: str | None = None
    timestamp: datetime | None = None
    idle_sleep: float = 0.5
    buffer_time: float = 0.5
    once: bool = False
    app: str | None = None
    worker_id: str | None = None
    failover_time: float = 10.0
    max_leases: int | None = None
    shard_sync_interval: float = 10.0
    ttl: str = "delete"
    route_tables: bool = False
    source_table: str | None = None
    tombstone_retention: float = 86400.0
    delete_mode: str = "hard"
    retry_timeout: float = 300.0
    reset: bool = False
    log_level: str = "warn"
    from_properties: bool = field(default=False, compare=False)  # for messages: kclrelay.create, not ?create=true
    metrics_port: int | None = None  # None: no Prometheus endpoint
    metrics_host: str = "127.0.0.1"
    kcl_metrics: str = "none"
    consumer: str = "polling"
    mapping: str | None = None  # the mapping file's path (kcl_relay/mapping), checked when the URL is parsed
    kind: str = KINESIS  # DYNAMODB_STREAMS: `stream` is the DynamoDB table whose stream is read

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def is_dynamodb_streams(self) -> bool:
        return self.kind == DYNAMODB_STREAMS

    def application_name(self, target_table: str, target_identity: str = "") -> str:
        """The KCL application (and lease table) name: explicit, else derived from stream and target.

        `target_identity` (TargetSpec.identity(): the normalized database and table, no secrets) and the stream add
        a short hash, so relays of one stream into two databases or tables never share checkpoints, and every worker
        of one relay, however it spells the target, derives the same name.
        """
        if self.app:
            return self.app
        identity = self.relay_identity(target_identity) if target_identity else ""
        suffix = f"-{hashlib.sha256(identity.encode()).hexdigest()[:8]}" if identity else ""
        label = f"{self.stream}.ddbstream" if self.is_dynamodb_streams else self.stream
        name = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"kcl-relay-{label}-{target_table}")
        return name[: 255 - len(suffix)] + suffix

    def relay_identity(self, target_identity: str) -> str:
        """What a derived application name stands for, printed at start: `stream S -> TARGET table T`."""
        if self.is_dynamodb_streams:
            return f"DynamoDB stream of table {self.stream} -> {target_identity}"
        return f"stream {self.stream} -> {target_identity}"


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


# option name -> (SourceSpec field, parser, help text). The single source of truth for parsing, --help and docs.
OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "batch-size": (
        "batch_size",
        _positive_int(10000),
        "records per database batch (not per GetRecords)",
    ),
    "create": ("create", _bool, "create the Kinesis stream upfront when missing, wait until ACTIVE"),
    "create-shards": ("create_shards", _positive_int(500), "shard count of a stream made by create=true"),
    "region": ("region", _name(re.compile(r"[a-z]{2}(-[a-z]+)+-\d"), "AWS region"), "AWS region"),
    "start": ("start", _choice(START_POSITIONS), "where to start on a shard without checkpoint"),
    "seqno": ("seqno", _seqno, "sequence number for start=seqno-at / seqno-after"),
    "timestamp": ("timestamp", _timestamp, "ISO-8601 time for start=at-timestamp"),
    "idle-sleep": ("idle_sleep", _seconds, "seconds to wait after a read that reached the tip of a shard"),
    "buffer-time": ("buffer_time", _seconds, "seconds to buffer records before writing them to the database"),
    "once": ("once", _bool, "stop, exit 0, once every shard is caught up"),
    "app": (
        "app",
        _name(APP_NAME, "application name (3-255 of a-z A-Z 0-9 _ . -)"),
        "KCL application name, i.e. its lease table; by default derived: kcl-relay-STREAM-TABLE",
    ),
    "worker-id": ("worker_id", _text, "KCL worker id (default: host name and a random suffix)"),
    "failover-time": ("failover_time", _seconds, "seconds before a dead worker's leases are taken over"),
    "max-leases": ("max_leases", _positive_int(100000), "at most this many shards per worker; by default no limit"),
    "shard-sync-interval": ("shard_sync_interval", _seconds, "seconds between shard discoveries"),
    "ttl": ("ttl", _choice(TTL_MODES), "TTL expiries (REMOVE by dynamodb.amazonaws.com): delete the row or ignore"),
    "route-tables": ("route_tables", _bool, "write each DynamoDB table's records into a target table of its name"),
    "source-table": ("source_table", _text, "the DynamoDB table expected in the stream (default: the first one seen)"),
    "tombstone-retention": (
        "tombstone_retention",
        _retention,
        "seconds to keep delete tombstones, at least 3600 (match the stream's retention)",
    ),
    "delete-mode": (
        "delete_mode",
        _choice(DELETE_MODES),
        "hard: a REMOVE deletes the row (tombstones keep older writes out); soft: the row stays, cdc_event = 'REMOVE'",
    ),
    "retry-timeout": (
        "retry_timeout",
        _seconds,
        "seconds a failing database is retried (capped backoff) before the worker stops without checkpoint",
    ),
    "log-level": (
        "log_level",
        _choice(LOG_LEVELS),
        "the KCL's and the processors' log files: warn, info (every shard start, flush, lease), debug",
    ),
    "reset": (
        "reset",
        _bool,
        "start over: delete the application's lease table (its checkpoints) first, so every shard starts at start=",
    ),
    "metrics-port": (
        "metrics_port",
        _port,
        "serve Prometheus metrics (counters, batch latency, lag, leases) on this port at /metrics; by default none",
    ),
    "metrics-host": ("metrics_host", _name(BIND_HOST, "host or address to bind"), "address the metrics port binds"),
    "kcl-metrics": (
        "kcl_metrics",
        _choice(KCL_METRICS_LEVELS),
        "the KCL's own CloudWatch metrics (metricsLevel): none, summary or detailed",
    ),
    "consumer": (
        "consumer",
        _choice(CONSUMERS),
        "how shards are read: polling (GetRecords) or fanout (enhanced fan-out through a stream consumer named"
        " after the application, registered once, deregistered by reset=true)",
    ),
    "mapping": (
        "mapping",
        _mapping_file,
        "a TOML file of typed columns, include/exclude and table options (docs/type-mapping.md)",
    ),
    "dynamodb-endpoint": (
        "dynamodb_endpoint",
        _http_url,
        "DynamoDB endpoint of the KCL lease table when it is not the stream's; by default the same",
    ),
}


# What a file replay uses; the rest is about Kinesis and the KCL.
FILE_OPTIONS = frozenset(
    {
        "batch-size",
        "ttl",
        "route-tables",
        "source-table",
        "tombstone-retention",
        "delete-mode",
        "retry-timeout",
        "mapping",
    }
)
# Options a DynamoDB stream has no use for, and why (one line each). Its start positions: STREAMS_START_POSITIONS.
NOT_FOR_DYNAMODB_STREAMS = {
    "create": "the stream is the table's own: enable it on the table (StreamViewType NEW_AND_OLD_IMAGES)",
    "create-shards": "DynamoDB manages the shards of a table's stream",
    "timestamp": "DynamoDB Streams has no AT_TIMESTAMP iterator; use start=earliest (24 h retention) or latest",
    "route-tables": "a DynamoDB stream carries one table",
    "source-table": "a DynamoDB stream carries one table: the one in the URL",
    "consumer": "DynamoDB Streams has no enhanced fan-out (at most two readers per shard)",
}
STREAMS_START_POSITIONS = ("earliest", "latest", "seqno-at", "seqno-after")


def closest(name: str, candidates: list[str]) -> str | None:
    """The known name a typo most likely meant (case aside), or None."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    if close:
        return close[0]
    lowered = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


def parse_source(url: str) -> SourceSpec:
    """Parse and validate a source URL; raise SourceError with a one-line message."""
    parts = urlsplit(url)
    if parts.scheme not in (SCHEME, STREAMS_SCHEME):
        raise SourceError(
            f"source URL must start with {SCHEME}:// (Kinesis) or {STREAMS_SCHEME}:// (DynamoDB Streams), "
            f"got {parts.scheme or 'no scheme'}://"
        )
    streams = parts.scheme == STREAMS_SCHEME
    if "@" not in parts.netloc and "@" in parts.path + parts.query + parts.fragment:
        # An unencoded "/", "?" or "#" in a secret ends the host early: say so without echoing any part of it.
        raise SourceError("source URL credentials must be URL-encoded (/ as %2F, ? as %3F, # as %23, @ as %40)")
    if parts.fragment:
        raise SourceError("source URL must not have a #fragment (in credentials, write # as %23)")
    values: dict[str, Any] = {}
    given: set[str] = set()
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in given:
            raise SourceError(f"source option {name!r} is given twice")
        given.add(name)
        if CONTROL.search(raw):
            raise SourceError(f"source option {name!r} holds a control character")
        if name not in OPTIONS:
            meant = closest(name, list(OPTIONS))
            hint = f" (did you mean {meant}?)" if meant else ""
            raise SourceError(f"unknown source option {name!r}{hint}; valid options: {', '.join(OPTIONS)}")
        # consumer=polling is what a DynamoDB stream does anyway (the templates say retrievalMode = POLLING).
        if streams and name in NOT_FOR_DYNAMODB_STREAMS and not (name == "consumer" and raw == "polling"):
            raise SourceError(
                f"source option {name!r} does not apply to {STREAMS_SCHEME}: {NOT_FOR_DYNAMODB_STREAMS[name]}"
            )
        attr, parser, _help = OPTIONS[name]
        try:
            values[attr] = parser(raw)
        except ValueError as error:
            raise SourceError(f"bad value {raw!r} for source option {name!r}: {error}") from None
    if streams:
        values["kind"] = DYNAMODB_STREAMS
        if values.get("start", "earliest") not in STREAMS_START_POSITIONS:
            raise SourceError(
                f"start={values['start']} does not apply to {STREAMS_SCHEME}: DynamoDB Streams has no AT_TIMESTAMP "
                f"iterator; use one of {', '.join(STREAMS_START_POSITIONS)}"
            )

    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise SourceError(f"bad port in source URL host {parts.netloc.rsplit('@', 1)[-1]!r}") from None
    if parts.username is not None and not parts.username:
        raise SourceError("source URL credentials must be KEY:SECRET with a non-empty KEY")
    if streams and not host:
        raise SourceError(
            f"source URL names no host: {STREAMS_SCHEME}://aws/TABLE or {STREAMS_SCHEME}://HOST:PORT/TABLE"
        )
    if not host:
        if not parts.path or parts.path == "/":
            raise SourceError("source URL names no host and no file: use HOST/STREAM or /ABS/PATH.ndjson")
        values["path"] = unquote(parts.path)
    else:
        stream = unquote(parts.path.lstrip("/"))
        if streams:
            if not stream:
                raise SourceError(f"source URL names no table: {STREAMS_SCHEME}://HOST/TABLE")
            if not TABLE_NAME.fullmatch(stream):
                raise SourceError(f"bad table name {stream!r}: 3-255 of a-z A-Z 0-9 _ . -")
        elif not stream:
            raise SourceError("source URL names no stream: kinesis+dynamodb+cdc://HOST/STREAM")
        elif not STREAM_NAME.fullmatch(stream):
            raise SourceError(f"bad stream name {stream!r}: 1-128 of a-z A-Z 0-9 _ . -")
        values["stream"] = stream
        if host != "aws":  # emulators and LocalStack speak plain HTTP on loopback
            netloc = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
            values["endpoint_url"] = f"http://{netloc}:{port}" if port else f"http://{netloc}"
        if parts.username is not None:
            if not parts.password:
                raise SourceError("source URL credentials must be KEY:SECRET")
            values["credentials"] = Credentials(unquote(parts.username), unquote(parts.password))

    if "path" in values and given - FILE_OPTIONS:
        raise SourceError(
            f"option(s) {', '.join(sorted(given - FILE_OPTIONS))} do not apply to a file replay; "
            f"valid there: {', '.join(sorted(FILE_OPTIONS))}"
        )
    spec = SourceSpec(**values)
    _check_combinations(spec)
    return spec


def _check_combinations(spec: SourceSpec) -> None:
    if spec.start in ("seqno-at", "seqno-after") and not spec.seqno:
        raise SourceError(f"start={spec.start} needs seqno=SEQUENCE_NUMBER")
    if spec.seqno and spec.start not in ("seqno-at", "seqno-after"):
        raise SourceError("seqno= needs start=seqno-at or start=seqno-after")
    if spec.start == "at-timestamp" and not spec.timestamp:
        raise SourceError("start=at-timestamp needs timestamp=ISO-8601")
    if spec.timestamp and spec.start != "at-timestamp":
        raise SourceError("timestamp= needs start=at-timestamp")
    if spec.route_tables and spec.source_table:
        raise SourceError("route-tables=true and source-table= exclude each other")


def describe_options() -> str:
    """The options as --help text, from the same table the parser uses."""
    defaults = SourceSpec()
    lines = []
    for name, (attr, _parser, text) in OPTIONS.items():
        default = getattr(defaults, attr)
        shown = (
            "" if default is None else f" (default {str(default).lower() if isinstance(default, bool) else default})"
        )
        lines.append(f"{name}: {text}{shown}")
    return "\n".join(lines)
