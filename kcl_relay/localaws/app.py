"""The WSGI app that hypercorn serves: moto's host dispatcher, so one port answers every moto service.

The dispatcher picks the backend (Kinesis, DynamoDB, DynamoDB Streams, CloudWatch, ...) from each request's
SigV4 credential scope or X-Amz-Target header, like LocalStack's single endpoint. It is served by hypercorn,
not by moto's own werkzeug server, because the KCL forces HTTP/2 (h2c over plain http) on its Kinesis client and
werkzeug only speaks HTTP/1.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from moto.core.serialize import BaseJSONSerializer
from moto.dynamodb.models import dynamodb_backends
from moto.kinesis.models import Shard
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from kcl_relay.localaws import dynamodb_streams

__all__ = ["ROLL_PATH", "app", "wire_attribute"]

ROLL_PATH = "/_kcl_relay/roll-stream-shard"  # POST ?table=T[&region=R]: close the stream shard, open its child
ACCOUNT = "123456789012"  # moto's default account


def _first_sequence_number(shard: Shard) -> int:
    return next(iter(shard.records), 0)


def _last_sequence_number(shard: Shard) -> int:
    return next(reversed(shard.records), 0)


def _speed_up_kinesis_puts() -> None:
    """Make moto's Kinesis PutRecords cost O(1) per record instead of O(records in the shard).

    moto 5.2.5 copies all keys of a shard's (insertion-ordered) record dict to find its first or last sequence
    number, and does so for every record put: measured, 2,900 records/s into an empty shard, 400/s once it holds
    50k. Reading the ends of the ordered dict gives the same numbers without the copy.
    """
    Shard.get_min_sequence_number = _first_sequence_number  # type: ignore[method-assign,assignment]
    Shard.get_max_sequence_number = _last_sequence_number  # type: ignore[method-assign,assignment]


def wire_attribute(value: dict[str, Any], base64: Callable[[Any], str]) -> dict[str, Any]:
    """moto's stored AttributeValue (binary as bytes) -> DynamoDB's wire JSON, as moto's serializer writes it."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64(inner)}
    if tag == "BS":
        return {"BS": [base64(member) for member in inner]}
    if tag == "M":
        return {"M": {name: wire_attribute(child, base64) for name, child in inner.items()}}
    if tag == "L":
        return {"L": [wire_attribute(child, base64) for child in inner]}
    return value


MOTO_STRUCTURE_SERIALIZER = BaseJSONSerializer._serialize_type_structure  # moto's own, kept for the tests


def _speed_up_attribute_values() -> None:
    """Serialize DynamoDB items (Scan, GetItem, stream records) without moto's walk over the botocore shapes.

    moto 5.2.5 checks every member of every AttributeValue against its shape: measured, about 10 ms per item of
    the workload's kind, so a 2,000-item Scan took 10 s. Its stored values are wire JSON already, but for binary as
    bytes; wire_attribute() writes the same JSON directly (tests/integration/test_localaws_speed.py compares both).
    """
    original = MOTO_STRUCTURE_SERIALIZER

    def serialize(self: BaseJSONSerializer, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and isinstance(value, dict) and len(value) == 1:
            self._default_serialize(serialized, wire_attribute(value, self._base64), shape, key)
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = serialize  # type: ignore[method-assign]


def with_test_hooks(moto_app: Any) -> Callable[[dict[str, Any], Any], Any]:
    """The emulator's own endpoint beside moto's: roll a table's DynamoDB stream shard (what AWS does every ~4 h)."""

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != ROLL_PATH:
            return moto_app(environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        region = query.get("region", ["us-east-1"])[0]
        try:
            table = dynamodb_backends[ACCOUNT][region].get_table(query["table"][0])
            child = dynamodb_streams.roll_shard(table)
        except Exception as error:  # a test hook: say what went wrong, to the test
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [f"{type(error).__name__}: {error}".encode()]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [child.id.encode()]

    return application


_speed_up_kinesis_puts()
_speed_up_attribute_values()
dynamodb_streams.install()
app = with_test_hooks(DomainDispatcherApplication(create_backend_app))
