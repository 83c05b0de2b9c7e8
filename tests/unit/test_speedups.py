"""The C fast paths (_speedups.c) against the pure-Python reference: same results, same errors, on random input.

Every test runs the public function twice, C paths on and off (speedups.use), and compares exactly: values with
their types (repr tells int from Decimal and Decimal('1.5') from Decimal('1.50')), JSON text, error messages.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from kcl_relay.cdc import speedups
from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import ChangeEvent, Position, RawRecord, lineage_rank
from kcl_relay.cdc.jsonenc import dumps, reference_dumps
from kcl_relay.cdc.layout import MAX_TEXT_BYTES, reference_split, split
from kcl_relay.cdc.values import from_item, reference_from_item
from tests.support.corpus import make_corpus, typical_attributes

pytestmark = pytest.mark.skipif(
    speedups.available is None, reason="the C extension is not built (python3 setup.py build_ext --inplace)"
)
POSITION = Position("shardId-000000000007", "49650000000000000000000000000000000000000000000000000042", 3)


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(speedups, "fallbacks", dict.fromkeys(speedups.PATHS, 0))
    yield
    speedups.use(True)
    # Broken input is declined (Fallback) or refused by a reference hook, never a fault of the C path.
    assert set(speedups.fallbacks.values()) == {0}, speedups.fallbacks


def outcome(function: Callable[[Any], Any], argument: Any, *, c: bool) -> tuple[Any, ...]:
    speedups.use(c)
    try:
        value = function(argument)
    except Exception as error:
        return ("raises", type(error).__name__, str(error))
    finally:
        speedups.use(True)
    return ("returns", describe(value))


def describe(value: Any) -> Any:
    if isinstance(value, ChangeEvent):
        fields = {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "raw"}
        return {**fields, "key_id": value.key_id, "order": value.order, "raw": value.raw}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return [(describe(k), describe(v)) for k, v in value.items()]  # order matters too
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [describe(v) for v in value])
    return (type(value).__name__, repr(value))


def same_both_ways(function: Callable[[Any], Any], argument: Any) -> tuple[Any, ...]:
    fast, reference = outcome(function, argument, c=True), outcome(function, argument, c=False)
    assert fast == reference, argument
    return fast


# ---------------------------------------------------------------- decode: whole records, valid and broken

NUMBERS = [
    "0", "-0", "7", "-7", "007", "1.5", "1.50", "-0.50", "0.000", "-0.0", "00012.5", "12.", ".5", "1E+2", "1e2",
    "-1.5E-130", "1E-131", "1E+126", "9.9E+125", "12345678901234567890123456789012345678",
    "123456789012345678901234567890123456789", "0.12345678901234567890123456789012345678",
    "1234567890123456789",
    "-12345678901234567890123456789012345678",
    "00000000000000000000000000000000000000001",
    "-0000000000000000000000000000000000000000.50", "999999999999999999", "-999999999999999999", "1_000", " 1",
    "1 ", "+1", "", "-", "٣",
    "NaN", "Infinity", "0x10", "1.2.3", "1e", "--1",
]  # fmt: skip
BINARIES = ["", "AA==", "AAA=", "AAAA", "A", "AA=", "A===", "AB=C", "====", "AB==\n", "ü===", "QUJD", "QUJDRA=="]
STRINGS = ["", "plain", "ü", "😀", 'q"\\', "tab\there", "\x00", "\u2028", "x" * 40, "\ud800", "\udc00x"]


def typed_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 9)
    if kind == 0:
        return {"S": rng.choice(STRINGS)}
    if kind == 1:
        return {"N": rng.choice(NUMBERS)}
    if kind == 2:
        return {"B": rng.choice([*BINARIES, base64.b64encode(rng.randbytes(rng.randrange(9))).decode()])}
    if kind == 3:
        return {"BOOL": rng.choice([True, False, 1, None, "true"])}
    if kind == 4:
        return {"NULL": rng.choice([True, True, False, None])}
    if kind == 5:
        tag = rng.choice(["SS", "NS", "BS"])
        pool = {"SS": [*STRINGS, 1], "NS": NUMBERS, "BS": BINARIES}[tag]
        return {tag: [rng.choice(pool) for _ in range(rng.randrange(4))]}
    if kind == 6:
        return rng.choice([{}, {"S": "a", "N": "1"}, {"X": "y"}, {"s": "lower"}, [], "bare", None, {"N": 5}])
    if kind == 7:
        return {"S": f"text-{rng.randrange(100)}"}
    if kind == 8:
        return {"N": str(rng.randint(-(10**20), 10**20))}
    if kind in (9, 10):
        return {"M": {rng.choice(["a", "b.c", "_u", "ü", "", "k"]): typed_value(rng, depth + 1) for _ in range(3)}}
    return {"L": [typed_value(rng, depth + 1) for _ in range(rng.randrange(4))]}


def mutate(rng: random.Random, document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    change = document.setdefault("dynamodb", {})
    choice = rng.randrange(16)
    if choice == 0:
        document["eventName"] = rng.choice(["INSERT", "MODIFY", "REMOVE", "UPDATE", 1, None])
    elif choice == 1:
        change["ApproximateCreationDateTime"] = rng.choice(
            [1.5, 1735689600.123456, 10**17, 10**20, -1, "1", None, True, 0, 99999999999, 10**11, 10**14 - 1]
        )
    elif choice == 2:
        change["ApproximateCreationDateTimePrecision"] = rng.choice([None, "SECOND", "MILLISECOND", 3])
    elif choice == 3:
        change.pop(rng.choice(["Keys", "NewImage", "ApproximateCreationDateTime", "OldImage"]), None)
    elif choice == 4 and change.get("NewImage"):
        change["NewImage"][rng.choice(list(change["NewImage"]))] = typed_value(rng)
    elif choice == 5 and change.get("Keys"):
        change["Keys"][rng.choice(list(change["Keys"]))] = typed_value(rng)
    elif choice == 6:
        document["userIdentity"] = rng.choice(
            [None, "x", {"type": "Service", "principalId": "dynamodb.amazonaws.com"}, {"type": "Service"}, [1]]
        )
    elif choice == 7:
        document["tableName"] = rng.choice(["other", "", None, 5, "ü.table"])
    elif choice == 8:
        document["eventSource"] = rng.choice(["aws:kinesis", None, "aws:dynamodb"])
    elif choice == 9 and change.get("NewImage"):
        change["NewImage"]["extra"] = typed_value(rng)
    elif choice == 10:
        document["dynamodb"] = rng.choice([None, [], "x", change])
    return document


def text_mutate(rng: random.Random, data: bytes) -> bytes:
    """Changes a parser notices: escapes in names and values, duplicates, whitespace, bad bytes, extra text."""
    choice = rng.randrange(14)
    if choice == 0:
        return data.replace(b'"eventName"', b'"event\\u004eame"', 1)
    if choice == 1:
        return data.replace(b'"aws:dynamodb"', b'"aws\\u003adynamodb"', 1)
    if choice == 2:
        return data.replace(b"{", b'{"eventName":"REMOVE",', 1)  # a duplicate: the later one counts
    if choice == 3:
        return data.replace(b'"dynamodb":', b'"dynamodb":{"Keys":{}},"dynamodb":', 1)
    if choice == 4:
        return data.replace(b",", b" ,\n\t", 3)
    if choice == 5:
        return data + rng.choice([b" ", b"\n", b"x", b"{}", b"\x00"])
    if choice == 6:
        return b"\xef\xbb\xbf" + data
    if choice == 7:
        cut = rng.randrange(len(data))
        return data[:cut] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b'"', b"\x01"]) + data[cut:]
    if choice == 8:
        return data[: rng.randrange(len(data))]
    if choice == 9:
        return data.replace(b'"S":"', b'"S":"\\ud83d\\ude00\\n\\u00fc', 1)
    if choice == 10:
        return data.replace(b'"S":"', b'"S":"\\ud800', 1)
    if choice == 11:
        return data.replace(b'"awsRegion":', b'"x":NaN,"y":1e400,"z":[[[[{}]]]],"awsRegion":', 1)
    if choice == 12:
        return data.replace(b'"N":"', b'"N":"\\u0031', 1)
    return data.replace(b'"tenant"', b'"ten\\u0061nt"', 1)


def corpus_documents() -> list[dict[str, Any]]:
    return [
        *make_corpus(300, seed=3),
        *make_corpus(200, seed=4, attributes=typical_attributes, old_images=False),
        *make_corpus(100, seed=5, precision="MILLISECOND"),
    ]


def serialize(rng: random.Random, document: Any) -> bytes:
    style = rng.randrange(3)
    if style == 0:
        return json.dumps(document).encode()
    if style == 1:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")


def test_decode_same_on_the_corpus_as_is() -> None:
    rng = random.Random(1)
    for _number, document in enumerate(corpus_documents()):
        record = RawRecord(serialize(rng, document), POSITION)
        assert same_both_ways(decode, record)[0] == "returns"
        assert speedups.native is not None
        speedups.native.decode_record(record.data, record, ChangeEvent)  # the C parser itself takes them all


def test_decode_same_on_broken_records() -> None:
    rng = random.Random(2)
    results = set()
    for document in corpus_documents() * 3:
        data = serialize(rng, mutate(rng, document))
        if rng.random() < 0.5:
            data = text_mutate(rng, data)
        results.add(same_both_ways(decode, RawRecord(data, POSITION))[0])
    assert results == {"returns", "raises"}  # both kinds were exercised


def test_decode_same_for_every_number_binary_and_string() -> None:
    base = make_corpus(1, seed=9)[0]
    base["eventName"] = "INSERT"
    for value in [*({"N": n} for n in NUMBERS), *({"B": b} for b in BINARIES), *({"S": s} for s in STRINGS)]:
        for where in ("NewImage", "Keys"):
            document = copy.deepcopy(base)
            document["dynamodb"][where]["probe"] = value
            if where == "Keys":
                document["dynamodb"]["NewImage"]["probe"] = value
            for data in (
                json.dumps(document).encode(),
                json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            ):
                same_both_ways(decode, RawRecord(data, POSITION))


def test_fast_event_is_the_dataclass_event() -> None:
    record = RawRecord(json.dumps(make_corpus(1, seed=9)[0]).encode(), POSITION)
    assert speedups.native is not None
    fast = speedups.native.decode_record(record.data, record, ChangeEvent)
    built = ChangeEvent(**{f.name: getattr(fast, f.name) for f in dataclasses.fields(ChangeEvent)})
    assert fast == built and hash(fast.order) == hash(built.order) and fast.key_id == built.key_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.op = "REMOVE"  # type: ignore[misc]


# ---------------------------------------------------------------- values, layout, jsonenc one by one


def test_from_item_same_on_random_typed_values() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        image = {rng.choice(["a", "b", "ü", ""]): typed_value(rng) for _ in range(rng.randrange(1, 4))}
        fast, reference = outcome(from_item, image, c=True), outcome(reference_from_item, image, c=False)
        assert fast == reference, image
    deep: Any = {"S": "leaf"}
    for _depth in range(40):
        deep = {"L": [deep]}
        assert outcome(from_item, {"d": deep}, c=True) == outcome(reference_from_item, {"d": deep}, c=False)


def plain_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(14 if depth < 3 else 10)
    values: list[Callable[[], Any]] = [
        lambda: rng.choice([*STRINGS, "é" * (MAX_TEXT_BYTES // 2), "é" * (MAX_TEXT_BYTES // 2 + 1)]),
        lambda: rng.choice([0, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**38, True, False]),
        lambda: Decimal(rng.choice(["0.1", "1.50", "-2.5E-130", "1E+2", "123456789012.345", "0.1234567890123456"])),
        lambda: Decimal(f"{rng.randint(-(10**17), 10**17)}E-{rng.randint(1, 20)}"),
        lambda: rng.choice([None, 1.5, float("nan"), float("inf"), -0.0]),
        lambda: rng.choice([(1, 2), b"bytes", {1, 2}]),
        lambda: Decimal(rng.choice(["NaN", "Infinity", "1E+5000", "-0", "0E-7", "1.0", "100"])),
        lambda: f"v{rng.randrange(50)}",
        lambda: rng.randint(-1000, 1000),
        lambda: Decimal(f"{rng.randint(0, 10**6)}.{rng.randint(1, 99):02d}"),
        lambda: [plain_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: [{"x": plain_value(rng, depth + 1)} for _ in range(rng.randrange(3))],
        lambda: {rng.choice(["a", "b.c", "_u", "ü", "", "[", "t\tab", 1]): plain_value(rng, depth + 1)},
        lambda: {f"k{i}": plain_value(rng, depth + 1) for i in range(rng.randrange(4))},
    ]
    return values[kind]()


def test_split_same_on_random_items() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        key = {"id": rng.choice([1, "x", Decimal("2.5")])}
        image = {**key, **{rng.choice(["a", "b", "c.d", "_e", "ü", ""]): plain_value(rng) for _ in range(4)}}
        fast = outcome(lambda pair: split(*pair), (key, image), c=True)
        assert fast == outcome(lambda pair: reference_split(*pair), (key, image), c=False), image


def test_dumps_same_on_random_values() -> None:
    rng = random.Random(5)
    for _ in range(5000):
        value = plain_value(rng)
        assert outcome(dumps, value, c=True) == outcome(reference_dumps, value, c=False), value
    for value in ['\x00\x1f\x7f\b\f\n\r\t"\\/', "\ud800", {"b": 1, "a": 2, "ü": 3, "😀": 4, "\uffff": 5}]:
        assert outcome(dumps, value, c=True) == outcome(reference_dumps, value, c=False)


def test_order_token_same_as_the_plain_formula() -> None:
    for shard in ("shardId-000000000000", "shardId-000000000123", "snapshot", "file:x.ndjson"):
        for sequence in ("0", "7", "0042", "49" + "0" * 54, "9" * 64, "0" + "9" * 64, "9" * 70, "-5", "+5"):
            for sub in (0, 3, 9_999_999_999, 10**10):
                expected = f"{lineage_rank(shard):013d}.{int(sequence):064d}.{sub:010d}"
                assert Position(shard, sequence, sub).order_token == expected
