"""The file source: replay CDC records from an NDJSON file, bare or wrapped as AWS Lambda receives Kinesis records."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from kcl_relay.cdc.event import SEQNO_WIDTH, Position, RawRecord

__all__ = ["batched", "read_records"]


def _is_sequence_number(text: str) -> bool:
    return 0 < len(text) <= SEQNO_WIDTH and text.isascii() and text.isdigit()


def _unwrap(line: bytes) -> tuple[bytes, str, str, str | None] | None:
    """(data, shard id, sequence number, partition key) of a Lambda Kinesis envelope, None for anything else."""
    try:
        envelope: Any = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict):
        return None
    kinesis = envelope.get("kinesis")
    if not isinstance(kinesis, dict):
        return None
    data, sequence = kinesis.get("data"), kinesis.get("sequenceNumber")
    # The sequence number orders records (Position.order_token); without a numeric one, treat the line as bare.
    if not isinstance(data, str) or not isinstance(sequence, str) or not _is_sequence_number(sequence):
        return None
    try:
        payload = base64.b64decode(data, validate=True)
    except ValueError:
        return None
    event_id = envelope.get("eventID")  # "shardId-000000000000:<sequence number>"
    if not isinstance(event_id, str) or not event_id.startswith("shardId-"):
        return None
    partition_key = kinesis.get("partitionKey")
    return payload, event_id.partition(":")[0], sequence, partition_key if isinstance(partition_key, str) else None


def read_records(path: Path) -> Iterator[RawRecord]:
    """Every non-blank line as one RawRecord. Never raises for bad content: decode() dead-letters it later."""
    shard_id = f"file:{path.name}"
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            # Only a line that mentions "kinesis" can be an envelope: bare records are not parsed twice.
            unwrapped = _unwrap(line) if b'"kinesis"' in line else None
            if unwrapped is None:
                yield RawRecord(data=line, position=Position(shard_id, str(number)))
            else:
                data, shard, sequence, partition_key = unwrapped
                yield RawRecord(data=data, position=Position(shard, sequence), partition_key=partition_key)


def batched(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    """Consecutive lists of at most `size` records; the last one may be shorter, none is empty."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch
