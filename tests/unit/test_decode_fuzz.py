"""Whatever bytes a record holds, decode() returns an event or raises DecodeError, never anything else.

The pipeline dead-letters DecodeError only; any other exception is a bug of ours and stops the processor without a
checkpoint. So every way a record can be malformed must come out as DecodeError, from the C parser and from the
pure-Python paths alike, and an event decode() accepts must go through what the pipeline does with it next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcl_relay.cdc import speedups
from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import ChangeEvent, Position, RawRecord
from kcl_relay.cdc.jsonenc import dumps
from kcl_relay.cdc.layout import split
from tests.support.corpus import make_corpus

POSITION = Position("shardId-000000000003", "49650000000000000000000000000000000000000000000000000042", 1)
CORPUS = make_corpus(40, seed=11)
ENCODED = [json.dumps(document, ensure_ascii=False).encode() for document in CORPUS]
# KCL_RELAY_FUZZ_EXAMPLES=5000 for a longer hunt.
EXAMPLES = int(os.environ.get("KCL_RELAY_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MODES = [False] if speedups.available is None else [True, False]  # C parser (when built) and pure Python


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    speedups.use(True)


def outcome(data: bytes, c: bool) -> tuple[str, str]:
    """What decode() makes of `data`: an accepted event (used as the pipeline uses it) or the DecodeError's reason."""
    speedups.use(c)
    try:
        event = decode(RawRecord(data, POSITION))
    except DecodeError as error:
        assert str(error) and "\n" not in str(error), "a reason is one line"
        return ("rejected", str(error))
    finally:
        speedups.use(True)
    assert isinstance(event, ChangeEvent)
    # What the pipeline and the sinks do next with an accepted event: none of it may raise.
    assert event.key_id and event.order
    if event.image is not None:
        row = split(event.key, event.image)
        dumps(row.data), dumps(row.aux)
    return ("accepted", event.key_id)


def decodes_only_to_decode_error(data: bytes) -> None:
    faults = sum(speedups.fallbacks.values())
    results = {outcome(data, c) for c in MODES}
    assert len(results) == 1, (data, results)  # the C parser and the reference agree, reason included
    assert sum(speedups.fallbacks.values()) == faults, f"a C fast path raised: {speedups.fallbacks}"


# Any JSON value, to put where a record has something else.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["S", "N", "B", "1e999", "-0", "AA==", "MODIFY", "aws:dynamodb"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12,
)
TAGS = st.sampled_from(["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS", "X"])
TYPED = st.recursive(
    st.builds(lambda tag, value: {tag: value}, TAGS, JSON),
    lambda children: (
        st.builds(lambda m: {"M": m}, st.dictionaries(st.text(max_size=4), children, max_size=3))
        | st.builds(lambda items: {"L": items}, st.lists(children, max_size=3))
    ),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    [
        ("eventSource",),
        ("eventName",),
        ("tableName",),
        ("userIdentity",),
        ("dynamodb",),
        ("dynamodb", "Keys"),
        ("dynamodb", "NewImage"),
        ("dynamodb", "ApproximateCreationDateTime"),
        ("dynamodb", "ApproximateCreationDateTimePrecision"),
    ]
)


def replaced(document: Any, path: tuple[str, ...], value: Any) -> Any:
    document = json.loads(json.dumps(document))
    node = document
    for name in path[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[path[-1]] = value
    return document


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decodes_only_to_decode_error(data)


@FUZZ
@given(st.sampled_from(ENCODED), st.data())
def test_mutated_bytes_of_real_records(data: bytes, draw: st.DataObject) -> None:
    mutated = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        at = draw.draw(st.integers(0, len(mutated)))
        action = draw.draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "cut":
            del mutated[at:]
        elif action == "delete":
            del mutated[at : at + draw.draw(st.integers(1, 8))]
        else:
            byte = draw.draw(st.sampled_from(b'{}[]":,\\\x00\x80\xc3\xff0-.eE'))
            if action == "insert" or at == len(mutated):
                mutated.insert(at, byte)
            else:
                mutated[at] = byte
    decodes_only_to_decode_error(bytes(mutated))


@FUZZ
@given(st.sampled_from(CORPUS), FIELDS, JSON)
def test_fields_of_the_wrong_shape_or_type(document: Any, path: tuple[str, ...], value: Any) -> None:
    decodes_only_to_decode_error(json.dumps(replaced(document, path, value)).encode())


@FUZZ
@given(st.sampled_from(CORPUS), st.sampled_from(["Keys", "NewImage"]), st.text(max_size=4), TYPED)
def test_attribute_values_of_any_type_tag_and_content(document: Any, image: str, name: str, typed: Any) -> None:
    change = document["dynamodb"]
    attributes = {**(change.get(image) or {}), name: typed}
    decodes_only_to_decode_error(json.dumps(replaced(document, ("dynamodb", image), attributes)).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe{}",
        b'{"a":1}\xff',
        b"[]",
        b"null",
        b'"text"',
        b"1e999999",
        b"9" * 5000,
        b"[" * 100_000,
        b'{"dynamodb":' * 5000,
        '{"eventSource":"aws:dynamodb","x":"\ud800"}'.encode("utf-8", "surrogatepass"),
        b'{"eventSource":"aws:dynamodb","eventName":"INSERT","dynamodb":{"Keys":{"k":{"N":"1e999999999"}}}}',
        # found by this test: exponents beyond what Decimal holds (InvalidOperation, an ArithmeticError), as a
        # number attribute and as a time; and a REMOVE's NewImage (which decode() ignores) with a bad number
        b'{"eventSource":"aws:dynamodb","eventName":"REMOVE","dynamodb":{"Keys":{"k":{"N":"1e345678901234567890123"}},'
        b'"ApproximateCreationDateTime":1735689600}}',
        b'{"eventSource":"aws:dynamodb","eventName":"REMOVE","dynamodb":{"Keys":{"k":{"S":"a"}},'
        b'"ApproximateCreationDateTime":1.5e99999999999999999999}}',
        b'{"eventSource":"aws:dynamodb","eventName":"REMOVE","dynamodb":{"Keys":{"k":{"S":"a"}},'
        b'"ApproximateCreationDateTime":1735689600,"NewImage":{"n":{"N":""}}}}',
    ],
)
def test_known_nasty_inputs(data: bytes) -> None:
    decodes_only_to_decode_error(data)
