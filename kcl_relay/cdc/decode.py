"""One raw CDC record (Kinesis Data Streams for DynamoDB JSON) to a ChangeEvent, or a DecodeError saying why not."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import orjson

from kcl_relay.cdc import speedups
from kcl_relay.cdc.event import ChangeEvent, KeyType, Op, RawRecord
from kcl_relay.cdc.values import from_item

__all__ = ["DecodeError", "decode", "version_micros"]

_OPS = frozenset(("INSERT", "MODIFY", "REMOVE"))
_KEY_TYPES = frozenset(("S", "N", "B"))
_FACTOR = {"MICROSECOND": 1, "MILLISECOND": 1000}
# Without a precision field, tell units apart by magnitude: 1E+11 s is the year 5138, 1E+11 ms is 1973 and
# 1E+14 ms is the year 5138 again, so no plausible timestamp is ambiguous.
_SECONDS_BELOW = 10**11
_MILLIS_BELOW = 10**14
_MICROS_BELOW = 10**17  # beyond, no unit gives a plausible time; also bounds the int built from a Decimal


class DecodeError(ValueError):
    """A record that cannot become a ChangeEvent; the message is a one-line reason for the dead letter."""


def version_micros(created: Any, precision: Any) -> int:
    """dynamodb.ApproximateCreationDateTime in microseconds since the epoch."""
    if isinstance(created, bool) or not isinstance(created, (int, Decimal, float)):
        raise DecodeError(f"ApproximateCreationDateTime is not a number: {created!r:.60}")
    value = Decimal(created) if isinstance(created, float) else created
    if (isinstance(value, Decimal) and not value.is_finite()) or not 0 <= value < _MICROS_BELOW:
        raise DecodeError(f"ApproximateCreationDateTime is not a valid time: {created!r:.60}")
    if precision is None:
        factor = 1_000_000 if value < _SECONDS_BELOW else 1000 if value < _MILLIS_BELOW else 1
    elif isinstance(precision, str) and precision in _FACTOR:
        factor = _FACTOR[precision]
    else:
        raise DecodeError(f"unknown ApproximateCreationDateTimePrecision: {precision!r:.40}")
    if isinstance(value, int):
        return value * factor
    return int((value * factor).to_integral_value())  # Decimal arithmetic: exact, then round half even


def _key_types(keys: Any) -> dict[str, KeyType]:
    if not isinstance(keys, dict) or not keys:
        raise DecodeError("dynamodb.Keys is missing or empty")
    types: dict[str, KeyType] = {}
    for name, av in keys.items():
        tag = next(iter(av)) if isinstance(av, dict) and len(av) == 1 else None
        if tag not in _KEY_TYPES:
            raise DecodeError(f"key attribute {name!r:.60} is not of type S, N or B")
        types[name] = cast(KeyType, tag)
    return types


def _is_ttl_expiry(identity: Any) -> bool:
    # DynamoDB's TTL process deletes as this service principal; a user's delete has no userIdentity.
    return (
        isinstance(identity, dict)
        and identity.get("type") == "Service"
        and identity.get("principalId") == "dynamodb.amazonaws.com"
    )


def _parse(data: bytes) -> dict[str, Any]:
    try:
        # parse_float=Decimal keeps fractional seconds exact; typed attribute values are strings anyway.
        document = json.loads(data, parse_float=Decimal)
    except ArithmeticError:  # InvalidOperation: an exponent beyond what Decimal holds, as in 1.5e99999999999999999999
        raise DecodeError("a JSON number with an exponent out of any range") from None
    except (ValueError, RecursionError) as error:  # ValueError covers bad JSON and bad UTF-8
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DecodeError(f"not JSON: {reason:.200}") from None
    if not isinstance(document, dict):
        raise DecodeError(f"not a JSON object but {type(document).__name__}")
    return document


def _fast_parse(data: bytes) -> dict[str, Any] | None:
    """orjson's parse when it gives what _parse would give for every field decode() uses, else None.

    orjson reads fractional and beyond-64-bit numbers as floats; the only such field decode() takes as a number is
    ApproximateCreationDateTime (typed attribute values are strings). What orjson refuses but the stdlib accepts
    (NaN, a BOM, UTF-16, lone surrogates) goes the reference way too.
    """
    try:
        document = orjson.loads(data)
    except (ValueError, TypeError):  # orjson.JSONDecodeError is a ValueError
        return None
    if document.__class__ is not dict:
        return None
    change = document.get("dynamodb")
    if change.__class__ is dict and change.get("ApproximateCreationDateTime").__class__ is float:
        return None
    return document


def decode(record: RawRecord) -> ChangeEvent:
    """Decode and validate one record. Raises DecodeError, never anything else, for bad input."""
    native = speedups.native
    if native is not None:
        try:
            return native.decode_record(record.data, record, ChangeEvent)
        except (speedups.Fallback, ValueError):
            # Declined, or a hook (values.parse_number, ...) refused a value, maybe one that decode() ignores (the
            # C parser converts NewImage before it knows the record is a REMOVE): the ways below decide.
            pass
        except Exception as error:  # a fault of the C path
            return speedups.recover("decode_record", error, _decode_python, record)
    return _decode_python(record)


def _decode_python(record: RawRecord) -> ChangeEvent:
    """decode() without the C parser: orjson when it reads the record the same way, else the stdlib."""
    document = _fast_parse(record.data)
    if document is not None:
        try:
            return _decode_document(record, document)
        except DecodeError:
            pass  # a bad record: the reference parse decides, so the reason reads the same (numbers as Decimal)
    return _decode_document(record, _parse(record.data))


def _decode_document(record: RawRecord, document: dict[str, Any]) -> ChangeEvent:
    if document.get("eventSource") != "aws:dynamodb":
        raise DecodeError(f"eventSource is not aws:dynamodb: {document.get('eventSource')!r:.60}")
    op = document.get("eventName")
    if not isinstance(op, str) or op not in _OPS:  # a list or object would not even hash
        raise DecodeError(f"eventName is not INSERT, MODIFY or REMOVE: {op!r:.60}")
    change = document.get("dynamodb")
    if not isinstance(change, dict):
        raise DecodeError("dynamodb is missing or not an object")
    key_types = _key_types(change.get("Keys"))
    created = change.get("ApproximateCreationDateTime")
    if created is None:
        raise DecodeError("dynamodb.ApproximateCreationDateTime is missing")
    version = version_micros(created, change.get("ApproximateCreationDateTimePrecision"))

    try:
        key = from_item(change["Keys"])
        image = None
        if op != "REMOVE":
            new_image = change.get("NewImage")
            if new_image is None:
                raise DecodeError(f"dynamodb.NewImage is missing for {op}")
            image = from_item(new_image)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("attribute value nested too deeply") from None
    except ValueError as error:
        raise DecodeError(str(error)) from None
    if image is not None:
        for name, value in key.items():
            # The row's pk comes from Keys and its data from NewImage: they must describe one item.
            if name in image and image[name] != value:
                raise DecodeError(f"NewImage disagrees with Keys on key attribute {name!r:.60}")

    table_name = document.get("tableName")
    return ChangeEvent(
        op=cast(Op, op),  # one of _OPS, checked above
        table_name=table_name if isinstance(table_name, str) else "",
        key=key,
        key_types=key_types,
        image=image,
        version=version,
        position=record.position,
        is_ttl_expiry=op == "REMOVE" and _is_ttl_expiry(document.get("userIdentity")),
        raw=record,
    )
