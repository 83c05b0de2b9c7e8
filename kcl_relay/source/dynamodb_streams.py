"""The boto3 side of a DynamoDB Streams source: the table's stream (DescribeTable), its shards, where a seqno is.

The KCL reads the stream through the DynamoDB Streams Kinesis adapter (kcl_relay/java); this module checks before
anything starts what the adapter would only fail on later, each with one line: the table exists, it has a stream,
and the stream carries new images (the relay installs NewImage; KEYS_ONLY and OLD_IMAGE streams have none).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from kcl_relay.source import kinesis
from kcl_relay.source.url import SourceError, SourceSpec

__all__ = [
    "NEW_IMAGE_VIEWS",
    "KinesisView",
    "TableStream",
    "client",
    "describe_shards",
    "find_stream",
    "kcl_properties",
    "prepare_stream",
    "shard_of_sequence_number",
]

NEW_IMAGE_VIEWS = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
MAX_RECORDS_PER_CALL = 1000  # DynamoDB Streams' GetRecords Limit (Kinesis allows 10,000)


@dataclasses.dataclass(frozen=True)
class TableStream:
    table: str
    arn: str
    view_type: str


@functools.lru_cache(maxsize=8)
def client(spec: SourceSpec, service: str) -> Any:
    """The table's DynamoDB or DynamoDB Streams client: the URL's endpoint (dynamodb-endpoint is the lease table's)."""
    return kinesis.session(spec).client(service, endpoint_url=spec.endpoint_url, config=kinesis.PREFLIGHT_CONFIG)


def _enable_hint(table: str) -> str:
    return (
        f"aws dynamodb update-table --table-name {table} "
        "--stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    )


def find_stream(spec: SourceSpec) -> TableStream:
    """The table's current stream from DescribeTable; SourceError (one line) when there is none we can relay."""
    assert spec.stream is not None
    table = spec.stream
    try:
        description = client(spec, "dynamodb").describe_table(TableName=table)["Table"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            raise SourceError(f"DynamoDB table {table!r} not found at {kinesis.where(spec)}") from None
        raise
    arn = description.get("LatestStreamArn")
    stream_spec = description.get("StreamSpecification") or {}
    if not arn or not stream_spec.get("StreamEnabled"):
        raise SourceError(
            f"DynamoDB table {table!r} has no stream: enable one with NEW_AND_OLD_IMAGES ({_enable_hint(table)})"
        )
    view = stream_spec.get("StreamViewType", "")
    if view not in NEW_IMAGE_VIEWS:
        raise SourceError(
            f"the stream of DynamoDB table {table!r} is {view or 'of no view type'}: its records carry no new image, "
            f"which the relay installs; it needs NEW_IMAGE or NEW_AND_OLD_IMAGES (disable the stream, then "
            f"{_enable_hint(table)})"
        )
    return TableStream(table=table, arn=arn, view_type=view)


def describe_shards(spec: SourceSpec, arn: str) -> list[dict[str, Any]]:
    """Every shard (DescribeStream pages), in the shape of Kinesis: ShardId, ParentShardId, SequenceNumberRange."""
    streams = client(spec, "dynamodbstreams")
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": arn}
    while True:
        description = streams.describe_stream(**kwargs)["StreamDescription"]
        shards.extend(description.get("Shards", []))
        last = description.get("LastEvaluatedShardId")
        if not last:
            return shards
        kwargs = {"StreamArn": arn, "ExclusiveStartShardId": last}


def prepare_stream(spec: SourceSpec) -> tuple[TableStream, list[dict[str, Any]]]:
    """Check the endpoints, the table and its stream; return the stream and its shards. SourceError otherwise."""
    with kinesis.aws_errors(spec):
        stream = find_stream(spec)
        shards = describe_shards(spec, stream.arn)
        if spec.dynamodb_endpoint:  # the lease table lives elsewhere: fail now, not in the JVM
            try:
                kinesis.client(spec, "dynamodb").list_tables(Limit=1)
            except EndpointConnectionError:
                raise SourceError(f"cannot reach the DynamoDB endpoint {spec.dynamodb_endpoint}") from None
        return stream, shards


def kcl_properties(stream: TableStream, props: dict[str, str]) -> dict[str, str]:
    """What differs in the KCL properties of a DynamoDB stream: streamName is its ARN (what the launcher's DynamoDB
    Streams entry point, kcl_relay/java, reads), and GetRecords takes at most 1,000 records."""
    records = min(int(props.get("maxRecords", MAX_RECORDS_PER_CALL)), MAX_RECORDS_PER_CALL)
    return {"streamName": stream.arn, "maxRecords": str(records)}


def shard_of_sequence_number(spec: SourceSpec, arn: str, shards: list[dict[str, Any]], seqno: str) -> str:
    """The shard holding the record with this sequence number, read back (as for Kinesis) to be exact."""
    streams = client(spec, "dynamodbstreams")
    for shard in shards:
        try:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=seqno
            )["ShardIterator"]
            records = streams.get_records(ShardIterator=iterator, Limit=1)["Records"]
        except ClientError:
            continue  # not this shard's sequence number
        if records and records[0]["dynamodb"]["SequenceNumber"] == seqno:
            return str(shard["ShardId"])
    raise SourceError(f"sequence number {seqno} not found in any shard of the stream of table {spec.stream!r}")


class KinesisView:
    """The two Kinesis calls `kcl-relay status` makes (GetShardIterator, GetRecords), answered by DynamoDB Streams.

    DynamoDB Streams has no MillisBehindLatest: like the adapter, the time since the record read (whole seconds),
    and 0 for an empty read of an open shard (its tip).
    """

    def __init__(self, spec: SourceSpec, arn: str) -> None:
        self.streams, self.arn = client(spec, "dynamodbstreams"), arn

    def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        ddb: dict[str, Any] = {"StreamArn": self.arn, "ShardId": request["ShardId"]}
        ddb["ShardIteratorType"] = request["ShardIteratorType"]
        if "StartingSequenceNumber" in request:
            ddb["SequenceNumber"] = request["StartingSequenceNumber"]
        return dict(self.streams.get_shard_iterator(**ddb))

    def get_records(self, **request: Any) -> dict[str, Any]:
        answer = dict(self.streams.get_records(**request))
        records = answer.get("Records", [])
        if records:
            created = records[-1]["dynamodb"]["ApproximateCreationDateTime"]
            answer["MillisBehindLatest"] = max(0, int((time.time() - created.timestamp()) * 1000))
        elif answer.get("NextShardIterator"):
            answer["MillisBehindLatest"] = 0
        return answer
