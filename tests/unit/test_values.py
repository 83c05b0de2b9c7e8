from decimal import Decimal

import pytest

from kcl_relay.cdc.values import from_attribute, from_item, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("-0", 0),
        ("100", 100),
        ("1E+2", 100),
        ("1e2", 100),
        ("100.00", 100),
        ("1.50", Decimal("1.5")),
        ("-7", -7),
        ("-0.125", Decimal("-0.125")),
        (".5", Decimal("0.5")),
        ("-1.5e-130", Decimal("-1.5E-130")),
        ("1E-130", Decimal("1E-130")),
        ("12345678901234567890123456789012345678", 12345678901234567890123456789012345678),
        ("-99999999999999999999999999999999999999", -99999999999999999999999999999999999999),
        ("1234567890123456789012345678901234567.8", Decimal("1234567890123456789012345678901234567.8")),
        ("0.12345678901234567890123456789012345678", Decimal("0.12345678901234567890123456789012345678")),
        ("9.9999999999999999999999999999999999999E+125", 99999999999999999999999999999999999999 * 10**88),
    ],
)
def test_numbers_exact_and_canonical(text: str, expected: object) -> None:
    value = from_attribute({"N": text})
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(value, Decimal):
        assert str(value) == str(expected)  # no trailing zeros left


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        ".",
        "abc",
        "NaN",
        "Infinity",
        "1_000",
        " 1",
        "1 ",
        "0x10",
        "١٢",
        "1e",
        "+1",
        "1e-131",
        "1E+126",
        "9" * 39,
    ],
)
def test_bad_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="number"):
        parse_number(text)


def test_number_must_be_a_string() -> None:
    with pytest.raises(ValueError):
        from_attribute({"N": 5})


def test_scalars() -> None:
    assert from_attribute({"S": ""}) == ""
    assert from_attribute({"S": "ü😀\n"}) == "ü😀\n"
    assert from_attribute({"BOOL": True}) is True
    assert from_attribute({"BOOL": False}) is False
    assert from_attribute({"NULL": True}) is None


def test_binary_stays_base64_text() -> None:
    assert from_attribute({"B": "AAEC/w=="}) == "AAEC/w=="
    assert from_attribute({"B": ""}) == ""


@pytest.mark.parametrize("bad", ["abc", "AA=", "not base64!", "AA==\n"])
def test_binary_must_be_valid_base64(bad: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        from_attribute({"B": bad})


def test_sets_sorted() -> None:
    assert from_attribute({"SS": ["b", "a", "", "c"]}) == ["", "a", "b", "c"]
    assert from_attribute({"NS": ["10", "-1.5", "2", "1E+1"]}) == [Decimal("-1.5"), 2, 10]  # 10 == 1E+1: one member
    assert (
        from_attribute({"NS": ["12345678901234567890123456789012345678", "1"]})[-1]
        == 12345678901234567890123456789012345678
    )
    assert from_attribute({"BS": ["Yg==", "YQ=="]}) == ["YQ==", "Yg=="]
    assert from_attribute({"SS": []}) == []
    assert from_attribute({"NS": []}) == []


def test_nested_maps_and_lists() -> None:
    av = {
        "M": {
            "empty_map": {"M": {}},
            "empty_list": {"L": []},
            "list": {"L": [{"S": "x"}, {"N": "1.0"}, {"L": [{"NULL": True}, {"M": {"deep": {"BOOL": False}}}]}]},
            "set": {"NS": ["3", "1"]},
        }
    }
    assert from_attribute(av) == {
        "empty_map": {},
        "empty_list": [],
        "list": ["x", 1, [None, {"deep": False}]],
        "set": [1, 3],
    }


def test_item() -> None:
    image = {"id": {"N": "7"}, "name": {"S": "n"}, "blob": {"B": "YQ=="}, "m": {"M": {"a": {"SS": ["z", "y"]}}}}
    assert from_item(image) == {"id": 7, "name": "n", "blob": "YQ==", "m": {"a": ["y", "z"]}}
    assert from_item({}) == {}


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"a": {"X": "1"}}, "attribute a: unknown type tag 'X'"),
        ({"a": {}}, "attribute a: expected an object with exactly one type tag"),
        ({"a": {"S": "x", "N": "1"}}, "attribute a: expected an object with exactly one type tag"),
        ({"a": "plain"}, "attribute a: expected an object with exactly one type tag"),
        ({"a": {"M": {"b": {"L": [{"S": "ok"}, {"N": "x"}]}}}}, "attribute a.b[1]: not a DynamoDB number"),
        ({"a": {"L": [{"L": [{"BOOL": "yes"}]}]}}, "attribute a[0][0]: BOOL value is not true or false"),
        ({"a": {"NULL": False}}, "attribute a: NULL value is not true"),
        ({"a": {"S": 1}}, "attribute a: S value is not a string"),
        ({"a": {"M": []}}, "attribute a: M value is not an object"),
        ({"a": {"L": {}}}, "attribute a: L value is not an array"),
        ({"a": {"SS": "x"}}, "attribute a: SS value is not an array"),
        ({"a": {"SS": ["x", 1]}}, "attribute a: S value is not a string"),
        ({"a": {"BS": ["%%"]}}, "attribute a: binary value is not valid base64"),
    ],
)
def test_invalid_values_name_their_path(image: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        from_item(image)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_item_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="item is not an object"):
        from_item([])  # type: ignore[arg-type]


def _nested(depth: int) -> dict:
    value: dict = {"S": "leaf"}
    for level in range(depth):
        value = {"L": [value]} if level % 2 else {"M": {"m": value}}
    return value


def test_nesting_up_to_dynamodb_limit() -> None:
    assert from_attribute(_nested(32)) is not None
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        from_attribute(_nested(33))


def test_path_of_odd_names_stays_on_one_line() -> None:
    with pytest.raises(ValueError) as caught:
        from_item({"multi\nline": {"M": {"x" * 500: {"N": "bad"}}}})
    message = str(caught.value)
    assert "\n" not in message and len(message) < 200
    assert message.startswith("attribute 'multi\\nline'.'xxx")
