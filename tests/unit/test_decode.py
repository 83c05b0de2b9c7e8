import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from kcl_relay.cdc import speedups
from kcl_relay.cdc.decode import DecodeError, decode, version_micros
from kcl_relay.cdc.event import Position, RawRecord

POSITION = Position("shardId-000000000001", "49650000000000000000000000000000000000000000000000000042")
KEYS = {"tenant": {"S": "acme"}, "id": {"N": "12345678901234567890123456789012345678"}}
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def record(op: str = "MODIFY", **change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": 1735689600123456,
        "Keys": copy.deepcopy(KEYS),
        "NewImage": {**copy.deepcopy(KEYS), "status": {"S": "paid"}, "amount": {"N": "12.50"}},
        "OldImage": {**copy.deepcopy(KEYS), "status": {"S": "new"}},
        "SizeBytes": 120,
        "ApproximateCreationDateTimePrecision": "MICROSECOND",
    }
    if op == "REMOVE":
        del body["NewImage"]
    body.update(change)
    return {
        "awsRegion": "us-east-1",
        "eventID": "0f2f5a4e-1111-2222-3333-444455556666",
        "eventName": op,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": "orders",
        "dynamodb": body,
        "eventSource": "aws:dynamodb",
    }


def raw(document: Any) -> RawRecord:
    data = document if isinstance(document, bytes) else json.dumps(document).encode("utf-8")
    return RawRecord(data=data, position=POSITION, partition_key="pk")


def test_modify() -> None:
    source = raw(record("MODIFY"))
    event = decode(source)
    assert event.op == "MODIFY"
    assert event.table_name == "orders"
    assert event.key == {"tenant": "acme", "id": 12345678901234567890123456789012345678}
    assert dict(event.key_types) == {"tenant": "S", "id": "N"}
    assert event.image == {**event.key, "status": "paid", "amount": Decimal("12.5")}
    assert event.version == 1735689600123456
    assert event.position == POSITION
    assert event.raw is source
    assert not event.is_ttl_expiry
    assert event.key_id == '{"id":12345678901234567890123456789012345678,"tenant":"acme"}'


def test_insert_and_remove() -> None:
    assert decode(raw(record("INSERT"))).image is not None
    removed = decode(raw(record("REMOVE")))
    assert removed.op == "REMOVE"
    assert removed.image is None
    assert removed.key == {"tenant": "acme", "id": 12345678901234567890123456789012345678}


def test_remove_ignores_new_image_and_old_image_content() -> None:
    document = record("REMOVE", OldImage={"broken": {"X": 1}})
    assert decode(raw(document)).image is None


def test_binary_key() -> None:
    keys = {"blob": {"B": "AAE="}}
    event = decode(raw(record("INSERT", Keys=keys, NewImage={**keys, "x": {"BOOL": True}})))
    assert event.key == {"blob": "AAE="}
    assert dict(event.key_types) == {"blob": "B"}


def test_ttl_expiry() -> None:
    document = record("REMOVE")
    document["userIdentity"] = dict(TTL_IDENTITY)
    assert decode(raw(document)).is_ttl_expiry
    document["userIdentity"] = {"type": "Service", "principalId": "someone.else.amazonaws.com"}
    assert not decode(raw(document)).is_ttl_expiry
    modify = record("MODIFY")
    modify["userIdentity"] = dict(TTL_IDENTITY)
    assert not decode(raw(modify)).is_ttl_expiry  # only a delete is an expiry


def test_missing_table_name() -> None:
    document = record()
    del document["tableName"]
    assert decode(raw(document)).table_name == ""


@pytest.mark.parametrize(
    ("created", "precision", "micros"),
    [
        (1735689600123456, "MICROSECOND", 1735689600123456),
        (1735689600123, "MILLISECOND", 1735689600123000),
        (1735689600123456, None, 1735689600123456),  # absent: microseconds by magnitude
        (1735689600123, None, 1735689600123000),  # absent: milliseconds by magnitude
        (1735689600, None, 1735689600000000),  # absent: seconds, as DynamoDB Streams sends
        (1735689600.123456, None, 1735689600123456),  # fractional seconds, exact
        (1479499740.0, None, 1479499740000000),
    ],
)
def test_version_precision(created: Any, precision: str | None, micros: int) -> None:
    change: dict[str, Any] = {"ApproximateCreationDateTime": created}
    if precision is None:
        document = record(**change)
        del document["dynamodb"]["ApproximateCreationDateTimePrecision"]
    else:
        document = record(**change, ApproximateCreationDateTimePrecision=precision)
    assert decode(raw(document)).version == micros


def test_version_micros_exact_with_decimal() -> None:
    assert version_micros(Decimal("1735689600.1234565"), None) == 1735689600123456  # half even
    assert version_micros(Decimal("1735689600123.5"), "MILLISECOND") == 1735689600123500


def _without(path: str) -> dict[str, Any]:
    document = record("MODIFY")
    target = document
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    del target[last]
    return document


def _with(path: str, value: Any, op: str = "MODIFY") -> dict[str, Any]:
    document = record(op)
    target = document
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    return document


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (_with("eventSource", "aws:kinesis"), "eventSource is not aws:dynamodb"),
        (_without("eventSource"), "eventSource is not aws:dynamodb"),
        (_with("eventName", "UPDATE"), "eventName is not INSERT, MODIFY or REMOVE"),
        (_without("eventName"), "eventName is not INSERT, MODIFY or REMOVE"),
        (_without("dynamodb"), "dynamodb is missing"),
        (_with("dynamodb", []), "dynamodb is missing or not an object"),
        (_without("dynamodb.Keys"), "dynamodb.Keys is missing or empty"),
        (_with("dynamodb.Keys", {}), "dynamodb.Keys is missing or empty"),
        (_with("dynamodb.Keys", [{"S": "x"}]), "dynamodb.Keys is missing or empty"),
        (_with("dynamodb.Keys", {"k": {"BOOL": True}}), "key attribute 'k' is not of type S, N or B"),
        (_with("dynamodb.Keys", {"k": {"M": {}}}), "key attribute 'k' is not of type S, N or B"),
        (_with("dynamodb.Keys", {"k": {"S": "a", "N": "1"}}), "key attribute 'k' is not of type S, N or B"),
        (_with("dynamodb.Keys", {"k": {"N": "one"}}), "attribute k: not a DynamoDB number"),
        (_without("dynamodb.NewImage"), "dynamodb.NewImage is missing for MODIFY"),
        (_with("dynamodb.NewImage", None, "INSERT"), "dynamodb.NewImage is missing for INSERT"),
        (_without("dynamodb.ApproximateCreationDateTime"), "dynamodb.ApproximateCreationDateTime is missing"),
        (_with("dynamodb.ApproximateCreationDateTime", "1735689600"), "ApproximateCreationDateTime is not a number"),
        (_with("dynamodb.ApproximateCreationDateTime", True), "ApproximateCreationDateTime is not a number"),
        (_with("dynamodb.ApproximateCreationDateTime", -5), "ApproximateCreationDateTime is not a valid time"),
        (_with("dynamodb.ApproximateCreationDateTime", 10**17), "ApproximateCreationDateTime is not a valid time"),
        (
            b'{"eventSource": "aws:dynamodb", "eventName": "INSERT", "dynamodb": {"Keys": {"k": {"S": "a"}}, '
            b'"NewImage": {}, "ApproximateCreationDateTime": 1e999999999}}',
            "ApproximateCreationDateTime is not a valid",
        ),
        (_with("dynamodb.ApproximateCreationDateTimePrecision", "NANOSECOND"), "unknown ApproximateCreationDateTime"),
        (_with("dynamodb.NewImage", {"a": {"N": "1.2.3"}}), "attribute a: not a DynamoDB number"),
        (_with("dynamodb.NewImage", {"a": {"M": {"b": {"Q": "x"}}}}), "attribute a.b: unknown type tag"),
        (_with("dynamodb.NewImage", "flat"), "item is not an object"),
        (_with("dynamodb.NewImage.tenant", {"S": "other"}), "NewImage disagrees with Keys on key attribute 'tenant'"),
    ],
)
def test_rejections(data: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(raw(data))
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message


def test_non_finite_time_is_rejected() -> None:
    data = json.dumps(record()).replace("1735689600123456", "NaN").encode()
    with pytest.raises(DecodeError, match="ApproximateCreationDateTime"):
        decode(raw(data))


@pytest.mark.parametrize("depth", [33, 450, 5000])
def test_deeply_nested_attribute_is_a_decode_error(depth: int) -> None:
    # Deeper than DynamoDB's 32 levels; whether json or the attribute walk gives up first, it is a DecodeError.
    deep = '{"L":[' * depth + '{"S":"leaf"}' + "]}" * depth
    text = json.dumps(_with("dynamodb.NewImage", "PLACEHOLDER")).replace('"PLACEHOLDER"', '{"deep":' + deep + "}")
    with pytest.raises(DecodeError):
        decode(raw(text.encode()))


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"dynamodb": {"ApproximateCreationDateTime": 1.5e99999999999999999999}}', "a JSON number with an exponent"),
        (
            json.dumps(record(Keys={"id": {"N": "1e3456789012345678901"}})).encode(),
            r"attribute id: number out of DynamoDB's range or precision: '1e3456789012345678901'",
        ),
    ],
)
@pytest.mark.parametrize("c", [True, False])
def test_exponents_beyond_what_decimal_holds_are_decode_errors(data: bytes, reason: str, c: bool) -> None:
    """Decimal raises InvalidOperation (an ArithmeticError, not a ValueError) for them: it must not escape decode()."""
    speedups.use(c)
    try:
        with pytest.raises(DecodeError, match=f"^{reason}"):
            decode(raw(data))
    finally:
        speedups.use(True)
