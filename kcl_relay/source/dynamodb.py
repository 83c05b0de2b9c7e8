"""The boto3 side of a full load: describe the table, learn AWS's clock, read Scan segments, get items by key.

Every item the scan reads becomes a ChangeEvent (op INSERT, the full item as its image) carrying a *snapshot
version*: a time taken before its page was requested, in microseconds, like a stream record's
ApproximateCreationDateTime. The guards in the sink then let the newer of snapshot item and stream event win.

Why the version is AWS's time minus a margin (see SNAPSHOT_MARGIN and docs/full-load.md): a snapshot item beats
every stream event whose version is not newer (on an equal version too: its position ranks above every shard).
That is only right if the item as read already contains every change stamped up to its version. DynamoDB stamps
changes with its own clock, so the version must come from AWS's clock, never from this machine's: a clock here
that runs ahead would stamp items "newer" than changes they do not contain, and those changes would be lost. So
the version is a lower bound of AWS's time (AwsClock, from the Date headers of DynamoDB's own answers) minus a
margin for what can still separate a stamped change from a read that sees it.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from kcl_relay.cdc.event import SNAPSHOT_SHARD, ChangeEvent, Item, KeyType, Position
from kcl_relay.cdc.jsonenc import decimal_text
from kcl_relay.cdc.values import from_item
from kcl_relay.source.table_url import TableSpec
from kcl_relay.source.url import SourceError
from kcl_relay.stopflag import Stoppable

__all__ = [
    "SNAPSHOT_MARGIN",
    "AwsClock",
    "TableInfo",
    "batch_get",
    "client",
    "describe",
    "item_key",
    "scan_segment",
    "snapshot_event",
    "typed_key",
    "wire_item",
]

# What separates a change DynamoDB stamped at time t from a read that sees it, all well below this:
# - the clock that stamps changes vs. the one that writes the Date header: both AWS's, kept to milliseconds;
# - a write's latency between its stamp and its acknowledgement (a strongly consistent read sees it from then on):
#   milliseconds, rarely more than a few hundred;
# - with eventually consistent reads (the default) a replica's lag: AWS says "usually within one second".
# Too small a margin could lose a change; too large a one costs nothing but re-applying the changes of those
# seconds, which the stream delivers anyway. Hence generous.
SNAPSHOT_MARGIN = 5.0  # seconds
CLOCK_WINDOW = 60.0  # seconds: observations older than this no longer bound AWS's clock (this machine's drift)
SCAN_CONFIG = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 10, "mode": "adaptive"})
# Checks before anything starts: a wrong host or table is one line within seconds, not after minutes of retries.
PREFLIGHT_CONFIG = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"})
BATCH_GET_KEYS = 100  # BatchGetItem's limit


@dataclass(frozen=True)
class TableInfo:
    name: str
    key_names: tuple[str, ...]  # the hash key, then the range key if any
    key_types: Mapping[str, KeyType]
    item_count: int  # DynamoDB's estimate, updated about every six hours
    size_bytes: int


def client(spec: TableSpec, preflight: bool = False) -> Any:
    """A DynamoDB client (thread-safe, shared by the scan threads); credentials from the URL or the usual chain.

    `preflight`: few retries, for the checks before anything starts."""
    if spec.credentials:
        session = boto3.Session(
            aws_access_key_id=spec.credentials.access_key_id,
            aws_secret_access_key=spec.credentials.secret_access_key,
            region_name=spec.region,
        )
    else:
        session = boto3.Session(region_name=spec.region)
    if preflight:
        return session.client("dynamodb", endpoint_url=spec.endpoint_url, config=PREFLIGHT_CONFIG)
    pool = Config(max_pool_connections=max(10, spec.segments + 2))  # every scan thread keeps a connection
    return session.client("dynamodb", endpoint_url=spec.endpoint_url, config=SCAN_CONFIG.merge(pool))


def _where(spec: TableSpec) -> str:
    return spec.endpoint_url or f"AWS {spec.region}"


def describe(spec: TableSpec, ddb: Any, clock: AwsClock | None = None) -> TableInfo:
    """The table's key schema and size estimate; SourceError (one line) when it cannot be read."""
    try:
        response = ddb.describe_table(TableName=spec.table)
    except EndpointConnectionError:
        raise SourceError(f"cannot reach the DynamoDB endpoint {_where(spec)}") from None
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code == "ResourceNotFoundException":
            raise SourceError(f"DynamoDB table {spec.table!r} not found at {_where(spec)}") from None
        raise SourceError(f"AWS refused DescribeTable at {_where(spec)}: {code}") from None
    except BotoCoreError as error:
        raise SourceError(f"AWS call to {_where(spec)} failed: {error}") from None
    if clock is not None:
        clock.observe(response)
    table = response["Table"]
    types = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
    schema = sorted(table["KeySchema"], key=lambda k: k["KeyType"] != "HASH")  # HASH first
    names = tuple(k["AttributeName"] for k in schema)
    return TableInfo(
        name=spec.table,
        key_names=names,
        key_types={name: types[name] for name in names},
        item_count=int(table.get("ItemCount") or 0),
        size_bytes=int(table.get("TableSizeBytes") or 0),
    )


class AwsClock:
    """A lower bound of AWS's clock, learned from the Date headers of DynamoDB's answers.

    A Date header holds whole seconds, rounded down: AWS's clock showed at least that when it answered, and the
    answer was sent before it was received here. So `Date - (monotonic time at receipt)` is a lower bound of
    `AWS time - monotonic time`; the greatest of the recent ones is the tightest. This machine's wall clock plays
    no part (it may be off, or step), and the monotonic clock only spans CLOCK_WINDOW, so its drift cannot add up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observations: deque[tuple[float, float]] = deque()  # (monotonic time of receipt, offset bound)
        self.observed = False

    def observe(self, response: Mapping[str, Any]) -> None:
        received = time.monotonic()
        header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not header:
            return
        try:
            aws_seconds = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError):
            return
        with self._lock:
            self._observations.append((received, aws_seconds - received))
            while len(self._observations) > 1 and received - self._observations[0][0] > CLOCK_WINDOW:
                self._observations.popleft()
            self.observed = True

    def now(self) -> float:
        """A lower bound of AWS's time now, in epoch seconds; this machine's clock when no answer had a Date."""
        now = time.monotonic()
        with self._lock:
            recent = [offset for received, offset in self._observations if now - received <= CLOCK_WINDOW]
            if not recent and self._observations:
                recent = [self._observations[-1][1]]  # nothing recent: the latest is still a bound, if a looser one
        return now + max(recent) if recent else time.time()

    def snapshot_version(self) -> int:
        """The version of items read from now on: AWS's time (lower bound) minus SNAPSHOT_MARGIN, in µs."""
        return int((self.now() - SNAPSHOT_MARGIN) * 1_000_000)


def wire_value(value: Any) -> Any:
    """boto3's typed values (binary as bytes) -> DynamoDB JSON as the stream carries it (binary as base64)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {name: wire_value(child) for name, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [wire_value(child) for child in value]
    return value


def wire_item(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {name: wire_value(value) for name, value in raw.items()}


def snapshot_event(raw: Mapping[str, Any], info: TableInfo, version: int, counter: int) -> ChangeEvent:
    """One scanned item (boto3's typed form) -> an INSERT of the whole item at the snapshot version.

    Raises ValueError (with the attribute's path) for a value the decoder refuses.
    """
    image = from_item(wire_item(raw))
    missing = [name for name in info.key_names if name not in image]
    if missing:
        raise ValueError(f"item without its key attribute(s) {missing}")
    return ChangeEvent(
        op="INSERT",
        table_name=info.name,
        key={name: image[name] for name in info.key_names},
        key_types=info.key_types,
        image=image,
        version=version,
        position=Position(SNAPSHOT_SHARD, str(counter)),
    )


def typed_key(key: Mapping[str, Any], key_types: Mapping[str, KeyType]) -> dict[str, Any]:
    """A decoded key -> boto3's typed form, for GetItem/BatchGetItem."""
    typed: dict[str, Any] = {}
    for name, value in key.items():
        kind = key_types[name]
        if kind == "N":
            typed[name] = {"N": decimal_text(value) if isinstance(value, Decimal) else str(value)}
        elif kind == "B":
            typed[name] = {"B": base64.b64decode(value)}
        else:
            typed[name] = {"S": value}
    return typed


@dataclass
class Page:
    version: int  # taken before the request: see the module docstring
    items: list[dict[str, Any]]
    last: bool  # the segment's last page


def scan_segment(
    ddb: Any, spec: TableSpec, segment: int, total: int, clock: AwsClock, stop: Stoppable
) -> Iterator[Page]:
    """The pages of one Scan segment, each with its snapshot version; stops early when `stop` is set."""
    request: dict[str, Any] = {"TableName": spec.table, "ConsistentRead": spec.consistent_read}
    if total > 1:
        request.update(Segment=segment, TotalSegments=total)
    if spec.page_size:
        request["Limit"] = spec.page_size
    while not stop.is_set():
        version = clock.snapshot_version()
        response = ddb.scan(**request)
        clock.observe(response)
        last_key = response.get("LastEvaluatedKey")
        yield Page(version=version, items=response.get("Items", []), last=not last_key)
        if not last_key:
            return
        request["ExclusiveStartKey"] = last_key


def batch_get(ddb: Any, table: str, keys: Sequence[Mapping[str, Any]], consistent: bool = True) -> list[dict[str, Any]]:
    """The items of these typed keys that exist (BatchGetItem, unprocessed keys retried with backoff)."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_KEYS):
        request: dict[str, Any] = {
            table: {"Keys": list(keys[start : start + BATCH_GET_KEYS]), "ConsistentRead": consistent}
        }
        delay = 0.05
        while request:
            response = ddb.batch_get_item(RequestItems=request)
            found.extend(response.get("Responses", {}).get(table, []))
            request = response.get("UnprocessedKeys") or {}
            if request:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    return found


def item_key(raw: Mapping[str, Any], info: TableInfo) -> Item:
    """The typed key of a raw (boto3) item."""
    return {name: raw[name] for name in info.key_names}
