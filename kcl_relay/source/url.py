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
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kcl_relay.masking import masked_eq
from kcl_relay.options import APP_NAME as APP_NAME  # re-exported: tests check names against it
from kcl_relay.options import CONTROL, SOURCE_OPTIONS, STREAM_NAME, ProcessorOptions, default

SCHEME = "kinesis+dynamodb+cdc"
STREAMS_SCHEME = "dynamodb+cdc"  # the table's DynamoDB stream, read through the DynamoDB Streams Kinesis adapter
KINESIS = "kinesis"
DYNAMODB_STREAMS = "dynamodb-streams"
TABLE_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")


class SourceError(ValueError):
    """A bad source URL or option: reported as one line, exit code 2."""


@dataclass(frozen=True)
class Words:
    """How a message names an option and a setting: the source URL's `start=latest`, or, given `keys` (option ->
    the key a properties file set it with), the file's `initialPositionInStream = latest` or `kclrelay.start`."""

    keys: dict[str, str] | None = None  # None: the URL's names
    prefix: str = "kclrelay."  # a properties file's key of an option it did not set

    def key(self, name: str) -> str:
        return (self.keys or {}).get(name, f"{self.prefix}{name}")

    def option(self, name: str) -> str:
        return f"source option {name!r}" if self.keys is None else self.key(name)

    def setting(self, name: str, value: str = "") -> str:
        if self.keys is None:
            return f"{name}={value}"
        return f"{self.key(name)} = {value}" if value else self.key(name)


URL_WORDS = Words()


@masked_eq  # an assertion diff of two credentials (or of specs holding them) never shows the secret
@dataclass(frozen=True, eq=False)
class Credentials:
    access_key_id: str  # not a secret (AWS shows it in CloudTrail): it tells which key is used
    secret_access_key: str = field(repr=False)

    def __repr__(self) -> str:  # never show the secret, not even in a traceback
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


@dataclass(frozen=True)
class SourceSpec(ProcessorOptions):
    """Everything the relay needs to know about where records come from, validated (with ProcessorOptions' fields,
    which the record processors get too)."""

    stream: str | None = None  # None for a file replay
    path: str | None = None  # the NDJSON file of a replay
    endpoint_url: str | None = None  # None: AWS's endpoints
    # the lease table's endpoint when it differs from endpoint_url
    dynamodb_endpoint: str | None = default("dynamodb-endpoint")
    credentials: Credentials | None = None  # None: the usual AWS chain
    region: str = default("region")
    create: bool = default("create")
    create_shards: int = default("create-shards")
    timestamp: datetime | None = default("timestamp")  # noqa: RUF009 - None (the table says so)
    once: bool = default("once")
    app: str | None = default("app")
    worker_id: str | None = default("worker-id")
    failover_time: float = default("failover-time")
    max_leases: int | None = default("max-leases")
    shard_sync_interval: float = default("shard-sync-interval")
    reset: bool = default("reset")
    from_properties: bool = field(default=False, compare=False)  # for messages: kclrelay.create, not ?create=true
    metrics_port: int | None = default("metrics-port")  # None: no Prometheus endpoint
    metrics_host: str = default("metrics-host")
    kcl_metrics: str = default("kcl-metrics")
    consumer: str = default("consumer")
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


# option name -> (SourceSpec field, parser, help text): a view of kcl_relay.options, where each is declared once.
OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    name: (option.attr, option.parse, option.help) for name, option in SOURCE_OPTIONS.items()
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
# Options a DynamoDB stream has no use for, and why (one line each; {earliest}: start=earliest in the user's words).
# Its start positions: STREAMS_START_POSITIONS.
NOT_FOR_DYNAMODB_STREAMS = {
    "create": "the stream is the table's own: enable it on the table (StreamViewType NEW_AND_OLD_IMAGES)",
    "create-shards": "DynamoDB manages the shards of a table's stream",
    "timestamp": "DynamoDB Streams has no AT_TIMESTAMP iterator; use {earliest} (24 h retention) or latest",
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
        attr, value = parse_option(name, raw, streams=streams)
        values[attr] = value
    if streams:
        values["kind"] = DYNAMODB_STREAMS
        check_streams_start(values)

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
        if not stream:
            if streams:
                raise SourceError(f"source URL names no table: {STREAMS_SCHEME}://HOST/TABLE")
            raise SourceError("source URL names no stream: kinesis+dynamodb+cdc://HOST/STREAM")
        values["stream"] = check_stream_name(stream, streams=streams)
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
    check_combinations(spec)
    return spec


def parse_option(name: str, raw: str, *, streams: bool, words: Words = URL_WORDS) -> tuple[str, Any]:
    """A known option's text -> (SourceSpec field, value); a SourceError in `words` (the URL's or a file's)."""
    if CONTROL.search(raw):
        raise SourceError(f"{words.option(name)} holds a control character")
    # consumer=polling is what a DynamoDB stream does anyway (the templates say retrievalMode = POLLING).
    if streams and name in NOT_FOR_DYNAMODB_STREAMS and not (name == "consumer" and raw == "polling"):
        reason = NOT_FOR_DYNAMODB_STREAMS[name].format(earliest=words.setting("start", "earliest"))
        raise SourceError(f"{words.option(name)} does not apply to {STREAMS_SCHEME}: {reason}")
    option = SOURCE_OPTIONS[name]
    try:
        return option.attr, option.parse(raw)
    except ValueError as error:
        raise SourceError(f"bad value {raw!r} for {words.option(name)}: {error}") from None


def check_streams_start(values: dict[str, Any], words: Words = URL_WORDS) -> None:
    """A DynamoDB stream's start position (`values`: SourceSpec fields)."""
    if values.get("start", "earliest") not in STREAMS_START_POSITIONS:
        raise SourceError(
            f"{words.setting('start', values['start'])} does not apply to {STREAMS_SCHEME}: DynamoDB Streams has no "
            f"AT_TIMESTAMP iterator; use one of {', '.join(STREAMS_START_POSITIONS)}"
        )


def check_stream_name(name: str, *, streams: bool) -> str:
    """A Kinesis stream's name, or the DynamoDB table's whose stream is read."""
    if streams:
        if not TABLE_NAME.fullmatch(name):
            raise SourceError(f"bad table name {name!r}: 3-255 of a-z A-Z 0-9 _ . -")
    elif not STREAM_NAME.fullmatch(name):
        raise SourceError(f"bad stream name {name!r}: 1-128 of a-z A-Z 0-9 _ . -")
    return name


def check_combinations(spec: SourceSpec, words: Words = URL_WORDS) -> None:
    """What the options say together; in `words` (the URL's or a properties file's)."""
    say = words.setting
    if spec.start in ("seqno-at", "seqno-after") and not spec.seqno:
        raise SourceError(f"{say('start', spec.start)} needs {say('seqno', 'SEQUENCE_NUMBER')}")
    if spec.seqno and spec.start not in ("seqno-at", "seqno-after"):
        raise SourceError(f"{say('seqno')} needs {say('start', 'seqno-at')} or {say('start', 'seqno-after')}")
    if spec.start == "at-timestamp" and not spec.timestamp:
        raise SourceError(f"{say('start', 'at-timestamp')} needs {say('timestamp', 'ISO-8601')}")
    if spec.timestamp and spec.start != "at-timestamp":
        raise SourceError(f"{say('timestamp')} needs {say('start', 'at-timestamp')}")
    if spec.route_tables and spec.source_table:
        raise SourceError(f"{say('route-tables', 'true')} and {say('source-table')} exclude each other")


def describe_options() -> str:
    """The options as --help text, from the same table the parser uses."""
    return "\n".join(f"{name}: {option.help}{option.default_in_help()}" for name, option in SOURCE_OPTIONS.items())
