"""Stand in for "Kinesis Data Streams for DynamoDB", which moto lacks: DynamoDB Streams records -> Kinesis.

moto does implement DynamoDB Streams (NEW_AND_OLD_IMAGES), so real item writes on the emulated table give
real change records. The pump reads them and PutRecords them into a Kinesis stream in the envelope AWS
publishes for a table's Kinesis streaming destination with ApproximateCreationDateTimePrecision MICROSECOND.

Ordering: records of one item key keep their stream order, on one Kinesis shard (the partition key is derived
from the item key). PutRecords gives no order between the entries of one request when some fail, so a request
carries at most one record per key, and a key's next record is only sent after the previous one landed.

Timestamps: moto stamps records with millisecond precision (AWS: seconds), so many records share one value.
The relay orders changes by this version (newest wins), so the pump derives microseconds as
max(previous + 1, source time) over the whole stream: strictly increasing, hence per key too, and
deterministic when the stream is read again from TRIM_HORIZON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError

from kcl_relay.localaws.server import REGION, aws_client
from kcl_relay.stopflag import Stoppable

__all__ = [
    "MotoUpsertInserts",
    "PumpClients",
    "PumpError",
    "PumpState",
    "StreamPump",
    "jsonable",
    "kds_envelope",
    "partition_key",
    "to_micros",
    "typed_key_id",
    "with_keys_from_image",
]

log = logging.getLogger(__name__)

VIEW_TYPE = "NEW_AND_OLD_IMAGES"
MAX_BATCH_RECORDS = 500  # PutRecords limits
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
GET_RECORDS_LIMIT = 1000
FLUSH_AT = 10_000  # pending envelopes: bounds memory when a long stream is read from TRIM_HORIZON
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class PumpError(RuntimeError):
    """Records could not be put after all retries; they stay queued for the next call."""


def jsonable(value: Any) -> Any:
    """Typed DynamoDB JSON as boto3 returns it -> wire JSON values (binary as base64, like AWS writes it)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return value


def typed_key_id(keys: Mapping[str, Any]) -> str:
    """An item's identity as canonical text of its typed key, e.g. {"pk":{"S":"a"}}: same key, same text."""
    return json.dumps(jsonable(keys), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def partition_key(keys: Mapping[str, Any]) -> str:
    """The Kinesis partition key of an item: its key text, hashed when longer than Kinesis allows."""
    text = typed_key_id(keys)
    return text if len(text) <= MAX_PARTITION_KEY_CHARS else hashlib.sha256(text.encode()).hexdigest()


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exact (no float round trip)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // timedelta(microseconds=1)


def _user_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    # boto3 names the DynamoDB Streams shape's members PrincipalId/Type; the Kinesis envelope writes them in
    # lower camel case, e.g. {"principalId": "dynamodb.amazonaws.com", "type": "Service"} for TTL deletions.
    identity = record.get("userIdentity")
    if not identity:
        return None
    return {"principalId": identity.get("PrincipalId"), "type": identity.get("Type")}


def kds_envelope(record: Mapping[str, Any], table_name: str, region: str, micros: int) -> dict[str, Any]:
    """One DynamoDB Streams record (boto3 shape) -> the Kinesis Data Streams for DynamoDB record."""
    source = record["dynamodb"]
    dynamodb: dict[str, Any] = {"ApproximateCreationDateTime": micros, "Keys": jsonable(source["Keys"])}
    for image in ("NewImage", "OldImage"):  # present as the stream's view type gives them
        if image in source:
            dynamodb[image] = jsonable(source[image])
    dynamodb["SizeBytes"] = source.get("SizeBytes", 0)
    dynamodb["ApproximateCreationDateTimePrecision"] = "MICROSECOND"
    return {
        "awsRegion": region,
        "eventID": str(uuid.uuid4()),  # fresh per envelope: ids of the DynamoDB stream mean nothing in Kinesis
        "eventName": record["eventName"],
        "userIdentity": _user_identity(record),
        "recordFormat": "application/json",
        "tableName": table_name,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }


def with_keys_from_image(record: dict[str, Any]) -> dict[str, Any]:
    """Take the key attribute values from the record's image, where moto has them right.

    moto 5.2.5 base64-encodes binary (B) key attributes in a stream record's Keys twice; its images are right.
    On AWS both always agree, so this changes nothing there.
    """
    change = record["dynamodb"]
    image = change.get("NewImage") or change.get("OldImage") or {}
    if not all(name in image for name in change["Keys"]):
        return record  # KEYS_ONLY streams have no image to take them from
    keys = {name: image[name] for name in change["Keys"]}
    return record if keys == change["Keys"] else {**record, "dynamodb": {**change, "Keys": keys}}


class MotoUpsertInserts:
    """Drops the extra INSERT that moto writes when UpdateItem creates an item.

    moto 5.2.5 creates the bare key first, then applies the update: two INSERT records, the first with a NewImage
    of only the key attributes. AWS writes one INSERT. Two INSERTs of one key in a row cannot happen on AWS, so
    a key-only INSERT directly followed by another INSERT of that key is dropped. Key-only INSERTs are held back
    until the key's next record or drain(), so a genuine key-only item is delayed, never lost.
    """

    def __init__(self) -> None:
        self._held: dict[str, dict[str, Any]] = {}

    def feed(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The records ready to publish, in order, now that `record` was read."""
        change = record["dynamodb"]
        key = typed_key_id(change["Keys"])
        previous = self._held.pop(key, None)
        ready = [previous] if previous is not None and record["eventName"] != "INSERT" else []
        if record["eventName"] == "INSERT" and change.get("NewImage", {}).keys() == change["Keys"].keys():
            self._held[key] = record
        else:
            ready.append(record)
        return ready

    def drain(self) -> list[dict[str, Any]]:
        held, self._held = list(self._held.values()), {}
        return held


@dataclass(frozen=True)
class PumpClients:
    dynamodb: Any
    streams: Any
    kinesis: Any

    @classmethod
    def for_endpoint(cls, endpoint_url: str, region: str = REGION) -> PumpClients:
        return cls(
            dynamodb=aws_client("dynamodb", endpoint_url, region),
            streams=aws_client("dynamodbstreams", endpoint_url, region),
            kinesis=aws_client("kinesis", endpoint_url, region),
        )


@dataclass
class PumpState:
    """Where the pump is: enough to resume without putting records twice. JSON-friendly."""

    positions: dict[str, str] = field(default_factory=dict)  # shard id -> last sequence number read
    finished: list[str] = field(default_factory=list)  # closed shards read to their end
    last_micros: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {"positions": self.positions, "finished": sorted(self.finished), "last_micros": self.last_micros}
        )

    @classmethod
    def from_json(cls, text: str) -> PumpState:
        try:
            data = json.loads(text)
            return cls(dict(data["positions"]), list(data["finished"]), int(data["last_micros"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a pump state: {error!r}") from error


@dataclass
class _Entry:
    partition_key: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())


class StreamPump:
    """Republish a table's DynamoDB stream into a Kinesis stream as Kinesis Data Streams for DynamoDB would."""

    def __init__(
        self,
        clients: PumpClients,
        table_name: str,
        stream_name: str,
        *,
        state: PumpState | None = None,
        max_attempts: int = 8,
        backoff: float = 0.1,
    ) -> None:
        self.clients = clients
        self.table_name = table_name
        self.stream_name = stream_name
        self.region: str = clients.dynamodb.meta.region_name
        self.max_attempts = max_attempts
        self.backoff = backoff
        restored = state or PumpState()
        self._positions = dict(restored.positions)
        self._finished = set(restored.finished)
        self._last_micros = restored.last_micros
        self._iterators: dict[str, str] = {}
        self._stream_arn: str | None = None
        # Per partition key, envelopes not yet put, in stream order. Dict order: the order keys got pending.
        self._queues: dict[str, deque[_Entry]] = {}
        self._pending = 0

    @property
    def state(self) -> PumpState:
        """Resumable only when nothing is pending, i.e. after a pump_available() that returned normally."""
        return PumpState(dict(self._positions), sorted(self._finished), self._last_micros)

    @property
    def pending(self) -> int:
        return self._pending

    def ensure_stream(self) -> str:
        """Enable the table's stream (NEW_AND_OLD_IMAGES) unless it is on; return its ARN."""
        if self._stream_arn:
            return self._stream_arn
        table = self.clients.dynamodb.describe_table(TableName=self.table_name)["Table"]
        if not table.get("StreamSpecification", {}).get("StreamEnabled"):
            log.info("enabling the %s stream of table %s", VIEW_TYPE, self.table_name)
            table = self.clients.dynamodb.update_table(
                TableName=self.table_name,
                StreamSpecification={"StreamEnabled": True, "StreamViewType": VIEW_TYPE},
            )["TableDescription"]
        self._stream_arn = table["LatestStreamArn"]
        return self._stream_arn

    def pump_available(self) -> int:
        """Read what the table's stream holds now and put it into Kinesis; return the records put."""
        put = 0
        upserts = MotoUpsertInserts()
        try:
            for record in self._read_new_records():
                for ready in upserts.feed(with_keys_from_image(record)):
                    self._enqueue(ready)
                if self._pending >= FLUSH_AT:
                    put += self._flush()
        finally:  # even when a flush failed: the stream position is past them, so they must stay pending
            for ready in upserts.drain():
                self._enqueue(ready)
        return put + self._flush()

    def follow(
        self,
        stop_event: Stoppable,
        interval: float = 0.5,
        on_put: Callable[[int], None] | None = None,
    ) -> int:
        """Pump until stop_event is set, polling every `interval` s when idle; return the records put.

        on_put(n) runs after each round that put records, when nothing is pending: the moment to save `state`.
        """
        total = 0
        while not stop_event.is_set():
            put = self.pump_available()
            total += put
            if put and on_put:
                on_put(put)
            if not put:
                stop_event.wait(interval)
        return total

    # Reading the DynamoDB stream

    def _read_new_records(self) -> Iterator[dict[str, Any]]:
        arn = self.ensure_stream()
        shards = self._shards(arn)
        known = {shard["ShardId"] for shard in shards}
        progressed = True
        while progressed:  # parents before children: after a split, a key's older records are in the parent
            progressed = False
            for shard in shards:
                shard_id, parent = shard["ShardId"], shard.get("ParentShardId")
                if shard_id in self._finished or (parent in known and parent not in self._finished):
                    continue
                yield from self._drain(arn, shard_id)
                if shard_id in self._finished:
                    progressed = True  # its children may start now

    def _shards(self, arn: str) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = self.clients.streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def _iterator(self, arn: str, shard_id: str) -> str:
        remembered = self._iterators.pop(shard_id, None)
        if remembered:
            return remembered
        kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"}
        if shard_id in self._positions:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self._positions[shard_id])
        iterator: str = self.clients.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        return iterator

    def _drain(self, arn: str, shard_id: str) -> Iterator[dict[str, Any]]:
        iterator: str | None = self._iterator(arn, shard_id)
        while iterator:
            try:
                response = self.clients.streams.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                    raise
                iterator = self._iterator(arn, shard_id)  # iterators expire after 15 min on AWS
                continue
            records = response.get("Records", [])
            for record in records:
                self._positions[shard_id] = record["dynamodb"]["SequenceNumber"]
                yield record
            iterator = response.get("NextShardIterator")
            if not records:
                break
        if iterator:
            self._iterators[shard_id] = iterator  # remembered so follow mode picks up where it stopped
        else:
            self._finished.add(shard_id)

    # Writing to Kinesis

    def _enqueue(self, record: Mapping[str, Any]) -> None:
        source_micros = to_micros(record["dynamodb"]["ApproximateCreationDateTime"])
        self._last_micros = max(self._last_micros + 1, source_micros)
        envelope = kds_envelope(record, self.table_name, self.region, self._last_micros)
        key = partition_key(record["dynamodb"]["Keys"])
        data = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        self._queues.setdefault(key, deque()).append(_Entry(key, data))
        self._pending += 1

    def _next_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        size = 0
        for queue in self._queues.values():  # at most one record per key: see the module docstring
            entry = queue[0]
            if len(batch) == MAX_BATCH_RECORDS or (batch and size + entry.size > MAX_BATCH_BYTES):
                break
            batch.append(entry)
            size += entry.size
        return batch

    def _flush(self) -> int:
        put = 0
        failures = 0
        while self._queues:
            batch = self._next_batch()
            response = self.clients.kinesis.put_records(
                StreamName=self.stream_name,
                Records=[{"Data": entry.data, "PartitionKey": entry.partition_key} for entry in batch],
            )
            landed = 0
            for entry, result in zip(batch, response["Records"], strict=True):
                if "ErrorCode" in result:
                    continue
                queue = self._queues[entry.partition_key]
                queue.popleft()
                if not queue:
                    del self._queues[entry.partition_key]
                landed += 1
            put += landed
            self._pending -= landed
            if landed == len(batch):
                failures = 0
                continue
            failures = 0 if landed else failures + 1
            if failures >= self.max_attempts:
                raise PumpError(f"PutRecords into {self.stream_name} failed {failures} times; {self.pending} pending")
            time.sleep(min(self.backoff * 2**failures, 5.0))  # throttled: back off before retrying the rest
        return put
