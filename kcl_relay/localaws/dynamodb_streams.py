"""What the DynamoDB Streams Kinesis adapter needs from moto's DynamoDB Streams and moto 5.2.5 lacks.

- Time: AWS rounds ApproximateCreationDateTime down to the second; moto keeps microseconds. Rounded here, so every
  test on the emulator meets the ties that order by sequence number and shard lineage (docs/options.md).
- DescribeStream's ShardFilter (type CHILD_SHARDS, shard id): the adapter asks it for the children of a shard that
  ended; moto ignores the filter and would answer the shard itself (a shard its own child). Answered here.
- Shard rollover: moto's table has one stream shard forever; AWS closes a shard after about four hours and opens a
  child. roll_shard() does that on demand (the emulator's POST /_kcl_relay/roll-stream-shard?table=T): the old shard
  gets an EndingSequenceNumber, reads of it end (no NextShardIterator once drained), the child continues.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from moto.dynamodb.models.table import StreamRecord, StreamShard, Table
from moto.dynamodbstreams import models as streams_models
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

__all__ = ["install", "roll_shard"]

# Closed shards of a table, oldest first (moto keeps only the current one, as table.stream_shard).
_CLOSED: dict[int, list[StreamShard]] = {}


def _ending(shard: StreamShard) -> int | None:
    return getattr(shard, "kcl_relay_ending", None)


def _shard_json(shard: StreamShard) -> dict[str, Any]:
    description = _ORIGINAL_SHARD_JSON(shard)
    parent = getattr(shard, "kcl_relay_parent", None)
    if parent:
        description["ParentShardId"] = parent
    ending = _ending(shard)
    if ending is not None:
        description["SequenceNumberRange"]["EndingSequenceNumber"] = str(ending)
    return description


def _shards(table: Table) -> list[StreamShard]:
    current = [table.stream_shard] if table.stream_shard is not None else []
    return [*_CLOSED.get(id(table), []), *current]


def roll_shard(table: Table) -> StreamShard:
    """Close the table's stream shard and open its child, as DynamoDB does every few hours."""
    parent = table.stream_shard
    assert parent is not None, "the table has no stream"
    parent.kcl_relay_ending = parent.starting_sequence_number + len(parent.items) - 1  # type: ignore[attr-defined]
    _CLOSED.setdefault(id(table), []).append(parent)
    child = StreamShard(parent.account_id, table)
    # DynamoDB Streams names a shard after its creation time in epoch milliseconds: later than the parent's.
    created_ms = max(int(time.time() * 1000), int(parent.id.split("-")[1]) + 1)
    child.id = f"shardId-{created_ms:020d}-{created_ms & 0xFFFFFFFF:08x}"
    child.kcl_relay_parent = parent.id  # type: ignore[attr-defined]
    # Sequence numbers of two shards are not comparable on AWS; the child's start below the parent's, so a test
    # sees the relay order by lineage, not by sequence number.
    child.starting_sequence_number = parent.starting_sequence_number // 2
    table.stream_shard = child
    return child


def _describe_stream(self: DynamoDBStreamsHandler) -> Any:
    arn = self._get_param("StreamArn")
    table = self.backend._get_table_from_arn(arn)
    result: Any = _ORIGINAL_DESCRIBE(self)
    description = result.result["StreamDescription"]
    shards = _shards(table)
    shard_filter = self._get_param("ShardFilter") or {}
    if shard_filter.get("Type") == "CHILD_SHARDS":
        parent = shard_filter.get("ShardId")
        shards = [shard for shard in shards if getattr(shard, "kcl_relay_parent", None) == parent]
    description["Shards"] = [_shard_json(shard) for shard in shards]
    return result


def _get_shard_iterator(
    self: streams_models.DynamoDBStreamsBackend,
    arn: str,
    shard_id: str,
    shard_iterator_type: str,
    sequence_number: str | None = None,
) -> streams_models.ShardIterator:
    table = self._get_table_from_arn(arn)
    shard = next((shard for shard in _shards(table) if shard.id == shard_id), None)
    if shard is None:
        raise AssertionError(f"no shard {shard_id}")  # moto's own answer to an unknown shard
    iterator = streams_models.ShardIterator(self, shard, shard_iterator_type, sequence_number)  # type: ignore[arg-type]
    self.shard_iterators[iterator.arn] = iterator
    return iterator


def _iterator_get(self: streams_models.ShardIterator, limit: int = 1000) -> dict[str, Any]:
    result = _ORIGINAL_ITERATOR_GET(self, limit)
    ending = _ending(self.stream_shard)
    if ending is not None and not result["Records"] and self.sequence_number > ending:
        del result["NextShardIterator"]  # a closed shard read to its end: the reader moves on to the children
    return result


def _round_down_to_the_second(self: StreamRecord, *args: Any, **kwargs: Any) -> None:
    _ORIGINAL_RECORD_INIT(self, *args, **kwargs)
    created = self.record["dynamodb"]["ApproximateCreationDateTime"]
    if isinstance(created, datetime):
        self.record["dynamodb"]["ApproximateCreationDateTime"] = created.replace(microsecond=0)
    elif isinstance(created, (int, float)):
        self.record["dynamodb"]["ApproximateCreationDateTime"] = math.floor(created)


_ORIGINAL_SHARD_JSON = StreamShard.to_json
_ORIGINAL_DESCRIBE = DynamoDBStreamsHandler.describe_stream
_ORIGINAL_ITERATOR_GET = streams_models.ShardIterator.get
_ORIGINAL_RECORD_INIT = StreamRecord.__init__


def install() -> None:
    StreamShard.to_json = _shard_json  # type: ignore[method-assign,assignment]
    DynamoDBStreamsHandler.describe_stream = _describe_stream  # type: ignore[method-assign]
    streams_models.DynamoDBStreamsBackend.get_shard_iterator = _get_shard_iterator  # type: ignore[method-assign]
    streams_models.ShardIterator.get = _iterator_get  # type: ignore[method-assign]
    StreamRecord.__init__ = _round_down_to_the_second  # type: ignore[method-assign]
