"""Kinesis Data Streams for DynamoDB records, built for tests."""

from __future__ import annotations

import uuid
from typing import Any

TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def cdc_record(
    op: str,
    key: str,
    micros: int,
    *,
    table: str = "items",
    ttl: bool = False,
    **attributes: str,
) -> dict[str, Any]:
    """A record of an item keyed `id` (S) with string attributes, at `micros` (ApproximateCreationDateTime)."""
    image = {"id": {"S": key}, **{name: {"S": value} for name, value in attributes.items()}}
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": micros,
        "Keys": {"id": {"S": key}},
        "SizeBytes": 100,
        "ApproximateCreationDateTimePrecision": "MICROSECOND",
    }
    dynamodb["OldImage" if op == "REMOVE" else "NewImage"] = image
    return {
        "awsRegion": "us-east-1",
        "eventID": str(uuid.uuid4()),
        "eventName": op,
        "userIdentity": dict(TTL_IDENTITY) if ttl else None,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }
