"""Fixed scenarios for tests/integration/test_generated_items.py: DynamoDB's limits that random examples reach
only rarely (2,000 attributes, 400 KB, 32 levels, keys of 2048 / 1024 bytes, every edge number, every type), and
the failing examples hypothesis found, kept as regression cases (REGRESSIONS)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from tests.support import dynamo_items as gen
from tests.support.dynamo_items import Image, KeySchema, Limits, Scenario, Typed, fixed

Case = Callable[[Limits], Scenario]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _names(limits: Limits) -> list[str]:
    names = [name for name in gen.SPECIAL_NAMES if limits.nul or "\x00" not in name]
    return [name for name in names if limits.supplementary_names or all(ord(char) <= 0xFFFF for char in name)]


def wide(limits: Limits, batch_size: int = 1) -> Scenario:
    """Items of 2,000 attributes (DynamoDB allows as many as fit in 400 KB), with different names each: together
    far beyond CrateDB's 1,000 columns per table; then a MODIFY that changes every value's type."""
    schema = KeySchema("id", "S")
    first = {"id": {"S": "wide-1"}, **gen.wide_attributes(1999, 0)}
    second = {"id": {"S": "wide-2"}, **gen.wide_attributes(1999, 1)}
    third = {"id": {"S": "wide-3"}, **{f"x{i:04d}_attribute": {"N": str(i)} for i in range(1999)}}
    retyped = {"id": {"S": "wide-1"}, **{name: {"S": f"now text {name}"} for name in gen.wide_attributes(1999, 0)}}
    return fixed(schema, [("INSERT", first), ("INSERT", second), ("INSERT", third), ("MODIFY", retyped)], batch_size)


def large(limits: Limits, batch_size: int = 1) -> Scenario:
    """Items of DynamoDB's full 400 KB: a long S (beyond CrateDB's 32 KB text limit), a long B, composite key."""
    schema = KeySchema("tenant", "S", "id", "N")
    key = {"tenant": {"S": "big"}, "id": {"N": "1"}}
    text = gen._text_of_bytes("aé東🔑", 300_000)
    blob = _b64(bytes(range(256)) * 350)  # 89,600 bytes
    image: Image = {**key, "text": {"S": text}, "blob": {"B": blob}, "list": {"L": [{"S": "x" * 5000}] * 3}}
    room = gen.MAX_ITEM_BYTES - gen.item_size(image) - len("fill") - 1
    image["fill"] = {"S": "f" * room}
    assert gen.item_size(image) <= gen.MAX_ITEM_BYTES
    other = {"tenant": {"S": "big"}, "id": {"N": "2"}, "set": {"SS": [f"{i:05d}" + "s" * 9000 for i in range(40)]}}
    smaller = {**key, "text": {"S": "short now"}}
    return fixed(schema, [("INSERT", image), ("INSERT", other), ("MODIFY", smaller), ("MODIFY", image)], batch_size)


def _nest(levels: int, leaf: Typed, names: list[str]) -> Typed:
    value = leaf
    for level in range(levels):
        if level % 3 == 2:
            value = {"L": [value, {"N": str(level)}]}
        else:
            value = {"M": {names[level % len(names)]: value, "n": {"N": str(level)}}}
    return value


def deep(limits: Limits, batch_size: int = 1) -> Scenario:
    """Documents nested 32 levels deep (DynamoDB's limit), and 16 and 17 (around the relay's CrateDB margin)."""
    schema = KeySchema("id", "B")
    names = ["a", "pk", "data", "_id", "a.b", "ü"]
    image: Image = {
        "id": {"B": _b64(b"\x00deep")},
        "maps32": _nest(32, {"S": "bottom"}, names),
        "maps16": _nest(16, {"N": "16"}, ["m"]),
        "maps17": _nest(17, {"BOOL": True}, ["m"]),
        "lists32": _lists(32),
    }
    assert all(gen.nesting(value) <= gen.MAX_NESTING for value in image.values())
    return fixed(
        schema, [("INSERT", image), ("MODIFY", {**image, "maps32": _nest(31, {"NULL": True}, names)})], batch_size
    )


def _lists(levels: int) -> Typed:
    value: Typed = {"S": "x"}
    for _ in range(levels):
        value = {"L": [value]}
    return value


def keys_at_limits(limits: Limits, batch_size: int = 1) -> Scenario:
    """A 2048-byte partition key and a 1024-byte sort key (S and B), multibyte text exactly at the byte limit."""
    schema = KeySchema("hash", "S", "range", "B")
    hash_text = gen._text_of_bytes("東🔑é", gen.HASH_KEY_BYTES)
    assert len(hash_text.encode("utf-8")) == gen.HASH_KEY_BYTES
    steps: list[tuple[str, Image]] = []
    for number in range(3):
        key = {"hash": {"S": hash_text}, "range": {"B": _b64(bytes([number]) * gen.RANGE_KEY_BYTES)}}
        steps.append(("INSERT", {**key, "n": {"N": str(number)}}))
    key = {"hash": {"S": "h"}, "range": {"B": _b64(b"\xff")}}
    steps += [("INSERT", {**key, "v": {"S": "1"}}), ("REMOVE", key), ("MODIFY", {**steps[0][1], "n": {"N": "9"}})]
    steps.append(("REMOVE", {name: steps[1][1][name] for name in ("hash", "range")}))
    return fixed(schema, steps, batch_size)


def number_keys(limits: Limits, batch_size: int = 1) -> Scenario:
    """N keys at DynamoDB's edges; "0" and "-0", "1E+2" and "100.00" name the same item."""
    schema = KeySchema("n", "N", "s", "S")
    steps: list[tuple[str, Image]] = []
    for index, text in enumerate(gen.EDGE_NUMBERS):
        steps.append(("INSERT", {"n": {"N": text}, "s": {"S": f"{index}"}, "v": {"N": text}}))
    steps.append(("INSERT", {"n": {"N": "0"}, "s": {"S": "z"}, "v": {"S": "zero"}}))
    steps.append(("MODIFY", {"n": {"N": "-0"}, "s": {"S": "z"}, "v": {"S": "minus zero"}}))
    steps.append(("INSERT", {"n": {"N": "1E+2"}, "s": {"S": "z"}, "v": {"S": "hundred"}}))
    steps.append(("MODIFY", {"n": {"N": "100.00"}, "s": {"S": "z"}, "v": {"S": "still hundred"}}))
    steps.append(("REMOVE", {"n": {"N": "1E-130"}, "s": {"S": str(gen.EDGE_NUMBERS.index("1E-130"))}}))
    return fixed(schema, steps, batch_size)


def every_type(limits: Limits, batch_size: int = 1) -> Scenario:
    """Every type, empty values, edge numbers in N / NS / L / M, and names of every kind, nested too."""
    schema = KeySchema("id", "S")
    numbers = list(gen.EDGE_NUMBERS)
    distinct: dict[object, str] = {}
    for text in numbers:
        distinct.setdefault(gen.number_value(text), text)
    names = [name for name in _names(limits) if name != "id"]
    image: Image = {
        "id": {"S": "all"},
        "s": {"S": "text"}, "empty_s": {"S": ""}, "b": {"B": _b64(b"\x00\x01\xff")}, "empty_b": {"B": ""},
        "t": {"BOOL": True}, "f": {"BOOL": False}, "null": {"NULL": True}, "empty_m": {"M": {}}, "empty_l": {"L": []},
        "ss": {"SS": ["b", "a", "", "ü", "🔑"]}, "ns": {"NS": list(distinct.values())},
        "bs": {"BS": [_b64(b"\xff"), _b64(b"\x00"), _b64(b"")]},
        "numbers": {"L": [{"N": text} for text in numbers]},
        "by_name": {"M": {name: {"N": text} for name, text in zip(names, numbers * 3, strict=False)}},
    }  # fmt: skip
    for index, name in enumerate(names):
        image[name] = {"N": numbers[index % len(numbers)]} if index % 2 else {"S": name}
    retyped = {"id": {"S": "all"}, **{name: {"BOOL": True} for name in image if name != "id"}}
    second = {"id": {"S": "second"}, "s": {"N": "1"}, "t": {"S": "true"}, "null": {"N": "0"}, "ns": {"SS": ["1"]}}
    return fixed(schema, [("INSERT", image), ("INSERT", second), ("MODIFY", retyped), ("MODIFY", image)], batch_size)


def reserved_key_names(limits: Limits, batch_size: int = 1) -> Scenario:
    """Key attributes named like the relay's own columns, with attributes of those names beside them."""
    hash_name, range_name = "pk", "cdc_version"  # valid CrateDB sub-column names, so every database has them
    schema = KeySchema(hash_name, "S", range_name, "N")
    steps: list[tuple[str, Image]] = []
    for number in range(3):
        key = {hash_name: {"S": "pk"}, range_name: {"N": str(number)}}
        steps.append(("INSERT", {**key, "data": {"S": "d"}, "aux": {"M": {"pk": {"S": "x"}}}, "cdc_order": {"N": "1"}}))
    steps.append(("REMOVE", {hash_name: {"S": "pk"}, range_name: {"N": "1"}}))
    return fixed(schema, steps, batch_size)


FIXED: dict[str, Case] = {
    "wide": wide,
    "large": large,
    "deep": deep,
    "keys_at_limits": keys_at_limits,
    "number_keys": number_keys,
    "every_type": every_type,
    "reserved_key_names": reserved_key_names,
}


def aux_name_beyond_bmp(limits: Limits, batch_size: int = 1) -> Scenario:
    """Found by hypothesis (shrunk by hand): an attribute that goes to aux (here: nested 17 maps deep, or a name
    with a dot) whose name, at any depth, holds a character beyond U+FFFF; then any MODIFY of the item.

    CrateDB 6.4.3 stores such an OBJECT(IGNORED) key so that every later INSERT ... ON CONFLICT DO UPDATE of the row
    fails: "UncheckedIOException[JsonParseException: Invalid UTF-8: Illegal surrogate character 0xd83d": the replay
    exited 1, a KCL worker would have stalled on the record. Now the relay stores such names escaped in aux
    (kcl_relay/sink/cratedb.py: aux_name).
    """
    schema = KeySchema("id", "S")
    nested: Typed = {"S": "x"}
    for _ in range(17):
        nested = {"M": {"a": nested}}
    steps: list[tuple[str, Image]] = [
        ("INSERT", {"id": {"S": "1"}, "n": {"N": "100"}, "k\U0001f511": nested}),
        ("MODIFY", {"id": {"S": "1"}, "n": {"N": "100"}}),
        ("INSERT", {"id": {"S": "2"}, "a.b\U0001f511": {"S": "x"}}),
        ("MODIFY", {"id": {"S": "2"}, "a.b\U0001f511": {"S": "y"}}),
    ]
    return fixed(schema, steps, batch_size)


def data_name_beyond_bmp(limits: Limits, batch_size: int = 1) -> Scenario:
    """Found by hypothesis in CI (shrunk by hand from 7 records to these): an item whose attribute name holds several
    characters beyond U+FFFF, in data, then its REMOVE. CrateDB 6.4.3 stores the row, but the REMOVE's row-state Get
    fails ("Invalid UTF-8: Illegal surrogate character 0xda21"): the replay exited 1. Now such an attribute goes to aux
    (kcl_relay/cdc/layout.py: valid_object_key), where names are stored escaped.
    """
    schema = KeySchema("pk", "S")
    key = {"pk": {"S": "\xc9\x13DL" * 400}}
    steps: list[tuple[str, Image]] = [
        ("INSERT", {**key, "\U000986e3\xbfA" * 10: {"NULL": True}}),
        ("REMOVE", key),
        ("INSERT", {**key, "o": {"M": {"\U0001f600\U0001f601x" * 4: {"S": "v\U0001f511"}}}, "e": {"S": "\U0001f600"}}),
        ("MODIFY", {**key, "\U0001f511": {"N": "1"}}),
        ("REMOVE", key),
    ]
    return fixed(schema, steps, batch_size)


# Failing examples hypothesis found (minimal), kept so they never come back.
REGRESSIONS: dict[str, Case] = {
    "aux_name_beyond_bmp": aux_name_beyond_bmp,
    "data_name_beyond_bmp": data_name_beyond_bmp,
}
# Regressions that still fail on a database, with why (the test expects the failure, strictly: a fix shows).
KNOWN_FAILURES: dict[tuple[str, str, int], str] = {}
