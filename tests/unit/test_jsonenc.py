import json
import random
from decimal import Decimal

import pytest

from kcl_relay.cdc.event import canonical_key
from kcl_relay.cdc.jsonenc import canonical_decimal, decimal_text, dumps, loads


def test_compact_sorted_and_unicode_kept() -> None:
    assert dumps({"b": [1, "ü"], "a": {"z": None, "y": True}}) == '{"a":{"y":true,"z":null},"b":[1,"ü"]}'


def test_same_as_stdlib_for_plain_json() -> None:
    value = {"s": 'q"\\\n\t\x00\u2028é😀', "n": [0, -1, 2**70, 1.5, -0.25], "t": [True, False, None], "e": {}, "l": []}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (Decimal("1E+2"), "100"),
        (Decimal("100.000"), "100"),
        (Decimal("-0.000"), "0"),
        (Decimal("1.50"), "1.5"),
        (Decimal("0.1"), "0.1"),
        (Decimal("-1.5e-130"), "-1.5E-130"),
        (Decimal("12345678901234567890123456789012345678"), "12345678901234567890123456789012345678"),
        (Decimal("1234567890123456789012345678901234567.8"), "1234567890123456789012345678901234567.8"),
        (Decimal("9.9999999999999999999999999999999999999E+125"), "99999999999999999999999999999999999999" + "0" * 88),
    ],
)
def test_decimals_are_exact_unquoted_numbers(number: Decimal, text: str) -> None:
    assert dumps(number) == text
    assert decimal_text(number) == text
    parsed = json.loads(dumps([number]), parse_float=Decimal)[0]
    assert parsed == number  # no float round trip: the value survives exactly


def test_canonical_decimal_types() -> None:
    assert canonical_decimal(Decimal("2.000")) == 2
    assert isinstance(canonical_decimal(Decimal("2.000")), int)
    stripped = canonical_decimal(Decimal("2.50"))
    assert isinstance(stripped, Decimal) and stripped.as_tuple() == Decimal("2.5").as_tuple()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), Decimal("NaN"), Decimal("-Infinity")])
def test_non_finite_numbers_raise(bad: object) -> None:
    with pytest.raises(ValueError):
        dumps({"x": [bad]})


def test_absurd_exponent_is_refused_not_expanded() -> None:
    with pytest.raises(ValueError):
        dumps(Decimal("1E+999999999"))


def test_unsupported_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        dumps({1: "int key"})
    with pytest.raises(TypeError):
        dumps(b"bytes")


def test_loads_numbers_exact() -> None:
    value = loads('{"i": 123456789012345678901234567890, "d": 0.1, "z": 1.0, "e": 1e2, "t": 1.50}')
    assert value == {"i": 123456789012345678901234567890, "d": Decimal("0.1"), "z": 1, "e": 100, "t": Decimal("1.5")}
    assert isinstance(value["d"], Decimal)
    assert type(value["z"]) is int and type(value["e"]) is int


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"x": -Infinity}'])
def test_loads_refuses_non_finite(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(["", "x", "ü\n\"'", "😀"])
    if kind == 1:
        return rng.randint(-(10**40), 10**40)
    if kind == 2:
        return Decimal(rng.randint(-(10**38), 10**38)).scaleb(-rng.randint(1, 140))
    if kind == 3:
        return rng.random() < 0.5
    if kind == 4:
        return None
    if kind == 5:
        return canonical_decimal(Decimal(f"{rng.randint(1, 999)}.{rng.randint(1, 9)}"))
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{rng.randrange(9)}": _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_round_trip_is_lossless() -> None:
    rng = random.Random(7)
    for _ in range(500):
        value = _random_value(rng)
        text = dumps(value)
        assert loads(text) == value
        assert dumps(loads(text)) == text  # canonical: a second pass changes nothing


def test_canonical_key_ignores_order_and_number_spelling() -> None:
    assert canonical_key({"b": Decimal("1.50"), "a": "x"}) == canonical_key({"a": "x", "b": Decimal("1.5")})
    assert canonical_key({"id": 100}) == canonical_key({"id": Decimal("1E+2")}) == '{"id":100}'
    assert canonical_key({"id": 1}) != canonical_key({"id": "1"})
