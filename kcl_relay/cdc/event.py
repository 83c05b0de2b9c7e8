"""The records that flow through the pipeline: source -> decode -> batch -> apply -> checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Literal

from kcl_relay.cdc import speedups

Op = Literal["INSERT", "MODIFY", "REMOVE"]
KeyType = Literal["S", "N", "B"]
# A decoded DynamoDB item: str, bool, None, int, decimal.Decimal (non-integral N), dict, list.
Item = dict[str, Any]

SEQNO_WIDTH = 64  # Kinesis sequence numbers have at most 56 digits; padding makes text order = numeric order
LINEAGE_WIDTH = 13  # shardId-NNNNNNNNNNNN (12 digits) plus one: room for the snapshot rank above them all
# Items of a full load (a table scan): on an equal version they win against stream records, see lineage_rank().
SNAPSHOT_SHARD = "snapshot"
_SNAPSHOT_RANK = 10**LINEAGE_WIDTH - 1
_SHARD_PREFIX = "shardId-"
_DDB_CREATED_DIGITS = 20


def lineage_rank(shard_id: str) -> int:
    """Where a shard stands in its stream's lineage: a child shard always ranks above its parents.

    Kinesis numbers shards in creation order (shardId-000000000000, -000000000001, ...), and the children of a split
    or merge are created after their parents, so the number orders any shard after its ancestors. DynamoDB Streams
    names a shard after its creation time in milliseconds, which orders a child after its parent the same way. An
    item's records sit in one shard at a time, so (rank, sequence number) orders them across resharding, where
    sequence numbers of two shards alone are not comparable. Records with no stream position (lines of a replayed
    file) rank 0; a snapshot item ranks above every shard: its version is taken before the item was read, so it
    already holds every change of that version.
    """
    if shard_id.startswith(_SHARD_PREFIX):
        number = shard_id[len(_SHARD_PREFIX) :]
        if number.isascii() and number.isdigit() and len(number) < LINEAGE_WIDTH:
            return int(number) + 1
        # DynamoDB Streams: shardId-<creation time, epoch ms, 20 digits>-<8 hex>, a child created when its parent
        # closed (the adapter reads that time the same way: KinesisMapperUtil.getShardCreationTime).
        created, dash, _suffix = number.partition("-")
        if dash and len(created) == _DDB_CREATED_DIGITS and created.isascii() and created.isdigit():
            rank = int(created) + 1
            if rank < _SNAPSHOT_RANK:
                return rank
    if shard_id == SNAPSHOT_SHARD:
        return _SNAPSHOT_RANK
    return 0


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record sits in its stream."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int = 0

    @property
    def order_token(self) -> str:
        """Text that sorts like the position across a shard lineage: the tie-breaker stored beside the version."""
        native = speedups.native
        if native is not None:
            try:
                return native.order_token(self)
            except speedups.Fallback:  # the C path declined: the formula below decides
                pass
            except Exception as error:  # a fault of the C path
                return speedups.recover("order_token", error, Position.reference_order_token, self)
        return self.reference_order_token()

    def reference_order_token(self) -> str:
        """order_token in pure Python: the reference the C path is tested against."""
        sequence = self.sequence_number
        if len(sequence) <= SEQNO_WIDTH and sequence.isascii() and sequence.isdigit():
            padded = sequence.rjust(SEQNO_WIDTH, "0")  # what formatting int(sequence) gives, without the int
        else:
            padded = f"{int(sequence):0{SEQNO_WIDTH}d}"
        return f"{_lineage_prefix(self.shard_id)}{padded}.{self.sub_sequence_number:010d}"


_LINEAGE_PREFIXES: dict[str, str] = {}  # a stream has few shards; bounded anyway for long-lived workers


def _lineage_prefix(shard_id: str) -> str:
    prefix = _LINEAGE_PREFIXES.get(shard_id)
    if prefix is None:
        if len(_LINEAGE_PREFIXES) >= 4096:
            _LINEAGE_PREFIXES.clear()
        prefix = _LINEAGE_PREFIXES[shard_id] = f"{lineage_rank(shard_id):0{LINEAGE_WIDTH}d}."
    return prefix


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as a source delivers it, before decoding."""

    data: bytes
    position: Position
    partition_key: str | None = None


@dataclass(frozen=True)  # no slots: key_id and order are cached in the instance dict
class ChangeEvent:
    """One decoded item change."""

    op: Op
    table_name: str
    key: Item  # key attributes, decoded
    key_types: Mapping[str, KeyType]
    image: Item | None  # the full NewImage for INSERT/MODIFY, None for REMOVE
    version: int  # dynamodb.ApproximateCreationDateTime in microseconds since the epoch
    position: Position
    is_ttl_expiry: bool = False
    raw: RawRecord | None = field(default=None, compare=False, repr=False)

    @cached_property
    def key_id(self) -> str:
        """The item's identity as canonical text: same key, same text, on every worker."""
        return canonical_key(self.key)

    @cached_property
    def order(self) -> tuple[int, str]:
        """Newest version wins; on a tie, the later record in stream order."""
        return (self.version, self.position.order_token)


def canonical_key(key: Mapping[str, Any]) -> str:
    from kcl_relay.cdc.jsonenc import dumps  # local import: jsonenc imports nothing from here

    return dumps(key)  # dumps sorts the keys


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be decoded or applied, kept with its reason instead of being dropped."""

    raw: str
    reason: str
    shard_id: str | None
    sequence_number: str | None
    failed_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def of(cls, record: RawRecord, reason: str) -> DeadLetter:
        return cls(
            raw=record.data.decode("utf-8", errors="replace"),
            reason=reason,
            shard_id=record.position.shard_id,
            sequence_number=record.position.sequence_number,
        )


speedups.configure(lineage_prefix=_lineage_prefix, seqno_width=SEQNO_WIDTH)
