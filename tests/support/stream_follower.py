"""The KCL's part without the KCL: read every shard of a Kinesis stream from a time on, into one Pipeline per
shard (as one processor per shard would), for integration tests of the full load next to a stream."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.pipeline import Pipeline, PipelineOptions
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import open_sink


class StreamFollower:
    def __init__(self, kinesis: Any, stream: str, start: datetime, target: TargetSpec, source_table: str) -> None:
        self.kinesis, self.stream = kinesis, stream
        self.options = PipelineOptions(batch_size=100, source_table=source_table)
        self.target = target
        self.iterators: dict[str, str] = {}
        self.pipelines: dict[str, Pipeline] = {}
        shards = kinesis.list_shards(StreamName=stream)["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            self.iterators[shard_id] = kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP", Timestamp=start
            )["ShardIterator"]
            self.pipelines[shard_id] = Pipeline(lambda _table: open_sink(target), self.options)
        self.applied = 0
        self.failure: BaseException | None = None

    def poll(self) -> int:
        """One GetRecords per shard, applied; the number of records read."""
        read = 0
        for shard_id, iterator in list(self.iterators.items()):
            response = self.kinesis.get_records(ShardIterator=iterator, Limit=100)
            self.iterators[shard_id] = response["NextShardIterator"]
            records = [
                RawRecord(record["Data"], Position(shard_id, record["SequenceNumber"]), record["PartitionKey"])
                for record in response["Records"]
            ]
            if records:
                pipeline = self.pipelines[shard_id]
                pipeline.add(records)
                self.applied += pipeline.flush().applied
                read += len(records)
        return read

    def follow(self, stop: threading.Event) -> None:
        """Poll until `stop` is set, then until a round finds nothing more (everything put so far is applied)."""
        try:
            while not stop.is_set():
                if not self.poll():
                    stop.wait(0.05)
            while self.poll():
                pass
        except BaseException as error:
            self.failure = error

    def close(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.close()
