from decimal import Decimal

import pytest

from kcl_relay.cdc.layout import (
    MAX_OBJECT_DEPTH,
    MAX_TEXT_BYTES,
    Row,
    crate_safe,
    split,
    valid_object_key,
)


@pytest.mark.parametrize("name", ["a", "name with space", "ü", "a-b", "a_b", "A1", "'quoted'", "with/slash"])
def test_valid_object_keys(name: str) -> None:
    assert valid_object_key(name)


@pytest.mark.parametrize(
    "name",
    ["", "a.b", ".", "a[0]", "[", "]", "_id", "_", "tab\there", "new\nline", "cr\r", "\U0001f600", "a\U000986e3b"],
)
def test_invalid_object_keys(name: str) -> None:
    assert not valid_object_key(name)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "x" * MAX_TEXT_BYTES,
        True,
        0,
        Decimal("0.1"),
        Decimal("-1.5E-130"),
        Decimal("52.52"),
        Decimal("2.000"),  # integral: a BIGINT
        {},
        [],
        2**63 - 2,
        -(2**63) + 1,
        [None, None],
        ["a", None, "b"],
        [1, 2, None],
        [Decimal("0.5"), Decimal("1.5")],
        {"a": {"b": {"c": [True, False]}}},
        [{"a": 1}, {"a": None}, {"b": "x"}, None],
        [{"a": {"x": 1}}, {"a": {"y": "s"}}],
    ],
)
def test_safe_values(value: object) -> None:
    assert crate_safe(value)


@pytest.mark.parametrize(
    "value",
    [
        2**63,
        -(2**63) - 1,
        2**63 - 1,  # CrateDB 6.4.3 refuses both ends of BIGINT's range in a BIGINT column
        -(2**63),
        12345678901234567890123456789012345678,
        Decimal("3.141592653589793238462643383279502884"),  # a DOUBLE keeps ~17 digits
        Decimal("1E+19"),
        "x" * (MAX_TEXT_BYTES + 1),
        "é" * (MAX_TEXT_BYTES // 2 + 1),  # short in characters, too long in UTF-8 bytes
        "\ud800",  # a lone surrogate is no text
        b"bytes",
        [[1]],
        [1, "a"],
        [1, Decimal("1.5")],  # CrateDB would silently make 1 a double
        [True, 1],
        [{"a": 1}, "x"],
        [{"a": 1}, {"a": "x"}],
        [{"a": {"b": 1}}, {"a": {"b": Decimal("0.5")}}],
        [{"a": [1]}],  # an array inside an object inside an array
        {"a.b": 1},
        {"_hidden": 1},
        {"ok": {"": 1}},
        {"ok": [{"x[0]": 1}]},
        {"deep": {"list": [1, "mixed"]}},
    ],
)
def test_unsafe_values(value: object) -> None:
    assert not crate_safe(value)


def test_depth_limit() -> None:
    value: object = 1
    for _ in range(MAX_OBJECT_DEPTH):
        value = {"k": value}
    assert crate_safe(value)
    assert not crate_safe({"k": value})


def test_split_routes_attributes() -> None:
    key = {"tenant": "acme", "id": 12345678901234567890123456789012345678}
    image = {
        **key,
        "status": "paid",
        "amount": Decimal("12.5"),
        "address": {"street": "Main", "geo": {"lat": Decimal("52.52")}},
        "tags": ["a", "b"],
        "lines": [{"sku": "x", "qty": 1}, {"sku": "y", "qty": 2}],
        "blob": "YQ==",
        "nothing": None,
        "a.b": "dotted name",
        "_private": 1,
        "": "empty name",
        "big": 10**30,
        "pi": Decimal("3.141592653589793238462643383279502884"),
        "mixed": [1, "a"],
        "matrix": [[1, 2]],
        "odd": {"ok": 1, "x.y": 2},
    }
    row = split(key, image)
    assert isinstance(row, Row)
    assert row.pk == key
    assert set(row.data) == {"status", "amount", "address", "tags", "lines", "blob", "nothing"}
    assert set(row.aux) == {"a.b", "_private", "", "big", "pi", "mixed", "matrix", "odd"}
    assert {**row.pk, **row.data, **row.aux} == image  # nothing lost, nothing changed
    assert not set(row.pk) & set(row.data) and not set(row.pk) & set(row.aux) and not set(row.data) & set(row.aux)
    assert row.aux["odd"] == {"ok": 1, "x.y": 2}  # a whole attribute moves, not just the bad part


def test_split_keys_only_image() -> None:
    row = split({"id": "a"}, {"id": "a"})
    assert row == Row(pk={"id": "a"}, data={}, aux={})
