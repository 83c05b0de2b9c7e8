"""The boto3 side of the Kinesis source: reach the endpoint, check or create the stream, find shards."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from kcl_relay.source.url import SourceError, SourceSpec

PREFLIGHT_CONFIG = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"})


def session(spec: SourceSpec) -> boto3.Session:
    if spec.credentials:
        return boto3.Session(
            aws_access_key_id=spec.credentials.access_key_id,
            aws_secret_access_key=spec.credentials.secret_access_key,
            region_name=spec.region,
        )
    return boto3.Session(region_name=spec.region)


@functools.lru_cache(maxsize=8)
def client(spec: SourceSpec, service: str) -> Any:
    """One client per source and service: building a botocore client costs a tenth of a second or more."""
    endpoint = (spec.dynamodb_endpoint or spec.endpoint_url) if service == "dynamodb" else spec.endpoint_url
    return session(spec).client(service, endpoint_url=endpoint, config=PREFLIGHT_CONFIG)


def where(spec: SourceSpec) -> str:
    """The endpoint the URL names, for messages."""
    return f"{spec.endpoint_url} (region {spec.region})" if spec.endpoint_url else f"AWS {spec.region}"


@contextlib.contextmanager
def aws_errors(spec: SourceSpec) -> Iterator[None]:
    """What boto3 raises at the URL's endpoint, as a one-line SourceError (a SourceError raised inside passes)."""
    try:
        yield
    except EndpointConnectionError:
        raise SourceError(f"cannot reach the AWS endpoint {where(spec)}") from None
    except ClientError as error:
        code = error.response["Error"]["Code"]
        raise SourceError(f"AWS refused {error.operation_name} at {where(spec)}: {code}") from None
    except BotoCoreError as error:
        raise SourceError(f"AWS call to {where(spec)} failed: {error}") from None


def prepare_stream(spec: SourceSpec) -> list[dict]:
    """Check the endpoints and the stream (creating it with create=true); return its shards. SourceError otherwise."""
    assert spec.stream is not None, "a file replay has no stream: cli runs replay_file for it, never this"
    kinesis = client(spec, "kinesis")
    with aws_errors(spec):
        try:
            kinesis.describe_stream_summary(StreamName=spec.stream)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            if not spec.create:
                create = "set kclrelay.create = true" if spec.from_properties else "add ?create=true"
                raise SourceError(
                    f"Kinesis stream {spec.stream!r} not found at {where(spec)}; {create} to create it"
                ) from None
            kinesis.create_stream(StreamName=spec.stream, ShardCount=spec.create_shards)
        wait_active(kinesis, spec.stream)
        try:
            client(spec, "dynamodb").list_tables(Limit=1)  # the KCL keeps its leases there: fail now, not in the JVM
        except EndpointConnectionError:
            raise SourceError(f"cannot reach the DynamoDB endpoint {spec.dynamodb_endpoint or where(spec)}") from None
        return list_shards(kinesis, spec.stream)


def wait_active(kinesis: Any, stream: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
        if status in ("ACTIVE", "UPDATING"):
            return
        if time.monotonic() > deadline:
            raise SourceError(f"Kinesis stream {stream!r} is still {status} after {timeout:.0f} s")
        time.sleep(0.5)


def list_shards(kinesis: Any, stream: str, shard_filter: dict[str, Any] | None = None) -> list[dict]:
    """Every page of ListShards (a ShardFilter, when given, goes with the first request only, as AWS requires)."""
    shards: list[dict] = []
    kwargs: dict[str, Any] = {"StreamName": stream, **({"ShardFilter": shard_filter} if shard_filter else {})}
    while True:
        page = kinesis.list_shards(**kwargs)
        shards.extend(page["Shards"])
        if not page.get("NextToken"):
            return shards
        kwargs = {"NextToken": page["NextToken"]}


def open_shard_ids(shards: list[dict]) -> set[str]:
    return {shard["ShardId"] for shard in shards if "EndingSequenceNumber" not in shard["SequenceNumberRange"]}


def shard_of_sequence_number(spec: SourceSpec, shards: list[dict], seqno: str) -> str:
    """The shard holding the record with this sequence number, read back to be exact on AWS and emulators alike."""
    kinesis = client(spec, "kinesis")
    for shard in shards:
        try:
            iterator = kinesis.get_shard_iterator(
                StreamName=spec.stream,
                ShardId=shard["ShardId"],
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=seqno,
            )["ShardIterator"]
            records = kinesis.get_records(ShardIterator=iterator, Limit=1)["Records"]
        except ClientError:
            continue  # not this shard's sequence number (AWS says InvalidArgumentException)
        if records and records[0]["SequenceNumber"] == seqno:
            return shard["ShardId"]
    raise SourceError(f"sequence number {seqno} not found in any shard of stream {spec.stream!r}")
