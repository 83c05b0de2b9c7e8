"""The table URL of a full load: `dynamodb://[KEY:SECRET@]HOST[:PORT]/TABLE[?options]` -> a validated TableSpec.

HOST `aws` means AWS's own endpoints of the region; any other HOST[:PORT] is one endpoint for DynamoDB (and, with
`stream=`, for Kinesis and the KCL's lease table too), like the stream URL. `stream=NAME` makes it a full load
followed by the stream: the options of the stream URL that still make sense (once, app, idle-sleep, ...) are given
in the same query; those the full load decides itself (start, timestamp, ...) are refused. `stream=:dynamodb`
follows the table's own DynamoDB stream instead, from its trim horizon (which is before the scan begins).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kcl_relay.options import CONTROL, OWN_STREAM, SOURCE_OPTIONS
from kcl_relay.options import TABLE_OPTIONS as FULL_LOAD_OPTIONS
from kcl_relay.options import default as _default
from kcl_relay.source import url as stream_url
from kcl_relay.source.url import (
    DYNAMODB_STREAMS,
    Credentials,
    SourceError,
    SourceSpec,
    check_combinations,
    check_stream_name,
    closest,
    parse_option,
)

STREAM_OPTIONS = stream_url.OPTIONS

__all__ = ["SCHEME", "TABLE_OPTIONS", "TableSpec", "describe_table_options", "is_table_url", "parse_table"]

SCHEME = "dynamodb"
TABLE_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,255}")
# Stream URL options that also mean something for a full load followed by the stream; given in the table URL.
STREAM_PASSTHROUGH = (
    "once",
    "app",
    "worker-id",
    "idle-sleep",
    "buffer-time",
    "failover-time",
    "max-leases",
    "shard-sync-interval",
    "ttl",
    "metrics-port",
    "metrics-host",
    "kcl-metrics",
    "log-level",
)
# Options both sides use: the scan and sink settings pass on to the stream.
SHARED = ("region", "batch-size", "tombstone-retention", "mapping", "delete-mode")
# Stream options the full load sets itself: where the stream starts and which table it carries.
DECIDED = (
    "start",
    "seqno",
    "timestamp",
    "source-table",
    "route-tables",
    "create",
    "create-shards",
    "dynamodb-endpoint",
)
_PLACEHOLDER_START = datetime(1970, 1, 1, tzinfo=timezone.utc)  # replaced by the real start point at run time


def default(name: str) -> Any:
    return _default(name, FULL_LOAD_OPTIONS)


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table to copy (and optionally the Kinesis stream of its changes to follow), validated."""

    table: str
    endpoint_url: str | None = None  # None: AWS's endpoints
    credentials: Credentials | None = None  # None: the usual AWS chain
    region: str = default("region")
    segments: int = default("segments")
    consistent_read: bool = default("consistent-read")
    page_size: int | None = default("page-size")  # None: DynamoDB's own 1 MB pages
    batch_size: int = default("batch-size")
    prune: bool = default("prune")
    tombstone_retention: float = default("tombstone-retention")
    mapping: str | None = default(
        "mapping"
    )  # the mapping file (kcl_relay/mapping): the target table is created with it
    delete_mode: str = default("delete-mode")
    stream_name: str | None = default("stream")
    # The stream side, fully validated; its start (at-timestamp) is filled in by stream_from().
    stream: SourceSpec | None = None

    def stream_from(self, start: datetime) -> SourceSpec:
        """The stream to follow, starting at `start` (a moment before the scan began).

        A DynamoDB stream has no AT_TIMESTAMP iterator: it starts at its trim horizon, which is earlier still (the
        stream exists before the scan begins: plan_worker finds it first)."""
        assert self.stream is not None
        if self.stream.is_dynamodb_streams:
            return self.stream
        return dataclasses.replace(self.stream, timestamp=start)


# option name -> (TableSpec field, parser, help text): a view of kcl_relay.options, where each is declared once.
TABLE_OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    name: (option.attr, option.parse, option.help) for name, option in FULL_LOAD_OPTIONS.items()
}


def is_table_url(url: str) -> bool:
    return urlsplit(url).scheme == SCHEME


def _endpoint(host: str, port: int | None) -> str | None:
    if host == "aws":
        return None
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    return f"http://{netloc}:{port}" if port else f"http://{netloc}"


def parse_table(url: str) -> TableSpec:
    """Parse and validate a table URL; raise SourceError with a one-line message that never holds a secret."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise SourceError(f"table URL must start with {SCHEME}://, got {parts.scheme or 'no scheme'}://")
    if "@" not in parts.netloc and "@" in parts.path + parts.query + parts.fragment:
        raise SourceError("table URL credentials must be URL-encoded (/ as %2F, ? as %3F, # as %23, @ as %40)")
    if parts.fragment:
        raise SourceError("table URL must not have a #fragment (in credentials, write # as %23)")
    values: dict[str, Any] = {}
    stream_options: dict[str, str] = {}
    given: set[str] = set()
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in given:
            raise SourceError(f"table option {name!r} is given twice")
        given.add(name)
        if CONTROL.search(raw):
            raise SourceError(f"table option {name!r} holds a control character")
        if name in DECIDED:
            raise SourceError(f"table option {name!r} is not for you to set: the full load decides it")
        if name in STREAM_PASSTHROUGH:
            stream_options[name] = raw
            continue
        if name not in TABLE_OPTIONS:
            valid = [*TABLE_OPTIONS, *STREAM_PASSTHROUGH]
            meant = closest(name, valid)
            hint = f" (did you mean {meant}?)" if meant else ""
            raise SourceError(f"unknown table option {name!r}{hint}; valid options: {', '.join(valid)}")
        attr, parser, _help = TABLE_OPTIONS[name]
        try:
            values[attr] = parser(raw)
        except ValueError as error:
            raise SourceError(f"bad value {raw!r} for table option {name!r}: {error}") from None
        if name in SHARED:
            stream_options[name] = raw

    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise SourceError(f"bad port in table URL host {parts.netloc.rsplit('@', 1)[-1]!r}") from None
    if not host:
        raise SourceError("table URL names no host: dynamodb://aws/TABLE or dynamodb://HOST:PORT/TABLE")
    table = unquote(parts.path.lstrip("/"))
    if not table:
        raise SourceError("table URL names no table: dynamodb://HOST/TABLE")
    if not TABLE_NAME.fullmatch(table):
        raise SourceError(f"bad table name {table!r}: 3-255 of a-z A-Z 0-9 _ . -")
    values["table"] = table
    values["endpoint_url"] = _endpoint(host, port)
    if parts.username is not None:
        if not parts.username or not parts.password:
            raise SourceError("table URL credentials must be KEY:SECRET with a non-empty KEY")
        values["credentials"] = Credentials(unquote(parts.username), unquote(parts.password))

    spec = TableSpec(**values)
    only_for_stream = sorted(set(stream_options) - set(SHARED))
    if spec.stream_name is None:
        if only_for_stream:
            raise SourceError(f"option(s) {', '.join(only_for_stream)} need stream=STREAM (full load, then stream)")
        return spec
    stream = _stream_spec(spec, stream_options)
    if stream.ttl == "ignore" and "prune" not in given:
        # The target keeps the rows of expired items on purpose: a prune would delete them.
        spec = dataclasses.replace(spec, prune=False)
    return dataclasses.replace(spec, stream=stream)


def _stream_spec(spec: TableSpec, options: dict[str, str]) -> SourceSpec:
    """The stream side, read directly by the stream URL's own parsers and checks: the same defaults and messages."""
    assert spec.stream_name is not None
    own = spec.stream_name == OWN_STREAM  # the table's DynamoDB stream, from its trim horizon (before the scan)
    decided = (
        {"start": "earliest"}
        if own
        else {"start": "at-timestamp", "timestamp": _PLACEHOLDER_START.isoformat(), "source-table": spec.table}
    )
    settings: dict[str, Any] = {"kind": DYNAMODB_STREAMS} if own else {}
    for name, raw in {**options, **decided}.items():
        attr, value = parse_option(name, raw, streams=own)
        settings[attr] = value
    stream = SourceSpec(
        **settings,
        stream=check_stream_name(spec.table if own else spec.stream_name, streams=own),
        # One endpoint for the table, the stream and the lease table (LocalStack style), like the stream URL's host.
        endpoint_url=spec.endpoint_url,
        credentials=spec.credentials,
    )
    check_combinations(stream)
    return stream


def describe_table_options() -> str:
    """The options as --help text, from the same tables the parser uses."""
    lines = [f"{name}: {option.help}{option.default_in_help()}" for name, option in FULL_LOAD_OPTIONS.items()]
    lines.append("with stream=, as in the stream URL:")
    for name in STREAM_PASSTHROUGH:
        option = SOURCE_OPTIONS[name]
        lines.append(f"  {name}: {option.help}{option.default_in_help()}")
    return "\n".join(lines)
