"""Generated DynamoDB change streams at DynamoDB's own limits, and the table they must leave behind.

Hypothesis strategies build a `Scenario`: a key schema (hash, or hash + range; S, N or B), a sequence of valid
INSERT / MODIFY / REMOVE events in stream order, a batch size and a file form. Items use every type, names of any
UTF-8 (the relay's own column names too), nesting up to DynamoDB's 32 levels, numbers at the edges of DynamoDB's
range and precision, keys up to 2048 (partition) and 1024 (sort) bytes; now and then an item is wide (up to 2,000
attributes) or large (up to DynamoDB's 400 KB).

The reference model is deliberately independent of kcl_relay: `final_state` replays the events the way DynamoDB
keeps the table (the last image per key), `plain` turns DynamoDB JSON into exact Python values following
docs/type-mapping.md, and `differences` compares that with an item read back from a target, strictly: types
must match (True is not 1), numbers exactly (Decimal, never float), sets as sets in the documented sorted order.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

Typed = dict[str, Any]  # one DynamoDB attribute value: {"S": "x"}, {"M": {...}}, ...
Image = dict[str, Typed]

MAX_ITEM_BYTES = 400 * 1024
MAX_NESTING = 32  # DynamoDB: documents (M, L) nest at most 32 levels deep
MAX_NAME_CHARS = 255
HASH_KEY_BYTES, RANGE_KEY_BYTES = 2048, 1024
MAX_WIDE = 2000
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}

# Names a relay could trip over: its own columns and companion tables' columns, CrateDB system columns, SQL and
# subscript syntax, JSON escapes, whitespace and control characters.
SPECIAL_NAMES = (
    "pk", "data", "aux", "cdc_version", "cdc_order", "cdc_event", "_id", "_seq_no", "_primary_term", "_version",
    "_score", "_doc", "_raw", "_uid", "key_id", "deleted_at", "raw", "reason", "shard_id", "sequence_number",
    "failed_at", "id", "a.b", "a[0]", "[", "]", "'", '"', "\\", "''; DROP TABLE x; --", "pk['id']", "data.x",
    " ", "\t", "\n", "\r", "\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "_", "__", "ü", "東京", "🔑", "$", "%s", "?",
)  # fmt: skip

# Numbers at DynamoDB's edges (38 significant digits, 1E-130 .. 9.99...E+125) and around the 64-bit and double
# limits the targets care about; some in non-canonical spellings a stream may carry.
EDGE_NUMBERS = (
    "0", "-0", "0.0", "-0.000", "1", "-1", "1E-130", "-1E-130", "1.5E-130",
    "9.9999999999999999999999999999999999999E+125", "-9.9999999999999999999999999999999999999E+125",
    "99999999999999999999999999999999999999", "-99999999999999999999999999999999999999",
    "0.00000000000000000000000000000000000001", "12345678901234567890123456789012345678",
    "1.2345678901234567890123456789012345678", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "18446744073709551616", "0.1", "1E+2", "100.00", "1.50",
    "3.141592653589793238462643383279502884", "2.5", "-0.125", "1e10", "1E+125", "-1E+125",
)  # fmt: skip


# ---- DynamoDB's item size ------------------------------------------------------------------------------------


def value_size(value: Typed) -> int:
    """An upper bound of DynamoDB's size of one attribute value (its documented accounting, numbers at most)."""
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(inner.encode("utf-8"))
    if tag == "N":
        return 21
    if tag == "B":
        return len(base64.b64decode(inner))
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(member.encode("utf-8")) for member in inner)
    if tag == "NS":
        return 21 * len(inner)
    if tag == "BS":
        return sum(len(base64.b64decode(member)) for member in inner)
    if tag == "L":
        return 3 + sum(1 + value_size(child) for child in inner)
    return 3 + sum(1 + len(name.encode("utf-8")) + value_size(child) for name, child in inner.items())  # M


def item_size(image: Image) -> int:
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in image.items())


def nesting(value: Typed) -> int:
    """How many documents (M, L) are nested in this value, itself included."""
    ((tag, inner),) = value.items()
    if tag == "M":
        return 1 + max((nesting(child) for child in inner.values()), default=0)
    if tag == "L":
        return 1 + max((nesting(child) for child in inner), default=0)
    return 0


# ---- strategies --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one target cannot hold at all, by its documented limits (the generator leaves those out)."""

    nul: bool = True  # a target that could not hold U+0000 in a string (PostgreSQL can: it stores it escaped)
    key_name: Callable[[str], bool] = lambda name: True  # CrateDB: key names must be valid sub-column names
    # Names beyond U+FFFF: CrateDB 6.4.3 breaks updates of rows holding one in aux, so the relay escapes them there
    # (dynamo_cases.aux_name_beyond_bmp); a target that could not hold them at all would set this False.
    supplementary_names: bool = True


@functools.cache  # one strategy object per Limits: building strategies anew is slow
def _characters(limits: Limits) -> st.SearchStrategy[str]:
    # codec="utf-8" leaves out lone surrogates, which no UTF-8 text (and so no DynamoDB string) can carry.
    return st.characters(codec="utf-8", exclude_characters="" if limits.nul else "\x00")


@functools.cache
def names(limits: Limits) -> st.SearchStrategy[str]:
    """Attribute names: any UTF-8 text of 1 to 255 characters, the relay's own column names often."""
    chars = _characters(limits)
    if not limits.supplementary_names:
        chars = st.characters(codec="utf-8", max_codepoint=0xFFFF, exclude_characters="" if limits.nul else "\x00")
    special = [name for name in SPECIAL_NAMES if (limits.nul or "\x00" not in name)]
    if not limits.supplementary_names:
        special = [name for name in special if all(ord(char) <= 0xFFFF for char in name)]
    return st.one_of(
        st.sampled_from(special),
        st.text(chars, min_size=1, max_size=12),
        st.text(chars, min_size=1, max_size=MAX_NAME_CHARS),
        st.builds(lambda c: (c * MAX_NAME_CHARS)[:MAX_NAME_CHARS], st.text(chars, min_size=1, max_size=3)),
    )


@st.composite
def number_texts(draw: st.DrawFn) -> str:
    """A valid DynamoDB N: up to 38 significant digits, magnitude 1E-130 .. below 1E+126, or zero."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(EDGE_NUMBERS))
    if draw(st.booleans()):
        return str(draw(st.integers(-(10**18), 10**18)))
    digits = draw(st.integers(1, 38))
    coefficient = draw(st.integers(10 ** (digits - 1), 10**digits - 1))
    # adjusted exponent = digits - 1 + exponent must lie in [-130, 125]
    exponent = draw(st.integers(-130 - (digits - 1), 125 - (digits - 1)))
    sign = draw(st.sampled_from(("", "-")))
    number = Decimal(f"{sign}{coefficient}E{exponent}")
    plain = f"{number:f}"
    if len(plain) <= 60 and draw(st.booleans()):
        return plain
    return str(number)


def number_value(text: str) -> Decimal:
    """The exact value of a DynamoDB number (Decimal's constructor is exact, whatever the context)."""
    return Decimal(text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def scalars(limits: Limits) -> st.SearchStrategy[Typed]:
    chars = _characters(limits)
    text = st.one_of(st.text(chars, max_size=20), st.sampled_from(("", " ", "null", "true", "1", "{}", "[]")))
    return st.one_of(
        text.map(lambda s: {"S": s}),
        number_texts().map(lambda n: {"N": n}),
        st.binary(max_size=24).map(lambda b: {"B": _b64(b)}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.just({"NULL": True}),
        st.lists(st.text(chars, max_size=8), min_size=1, max_size=5, unique=True).map(lambda m: {"SS": m}),
        st.lists(number_texts(), min_size=1, max_size=5, unique_by=number_value).map(lambda m: {"NS": m}),
        st.lists(st.binary(max_size=8), min_size=1, max_size=5, unique=True).map(
            lambda m: {"BS": [_b64(b) for b in m]}
        ),
    )


@functools.cache
def documents(limits: Limits) -> st.SearchStrategy[Typed]:
    """Any attribute value: scalars, sets, and M / L of them (small and shallow; `deep` reaches 32 levels)."""
    children = st.recursive(
        scalars(limits),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: {"L": items}),
            st.dictionaries(names(limits), inner, max_size=4).map(lambda members: {"M": members}),
        ),
        max_leaves=10,
    )
    # One value in ten is a deep one.
    either = st.integers(0, 9).flatmap(lambda pick: deep(limits) if pick == 0 else children)
    return either.filter(lambda value: nesting(value) <= MAX_NESTING)


@st.composite
def deep(draw: st.DrawFn, limits: Limits) -> Typed:
    """A value nested 1 to 32 documents deep (M and L mixed), often exactly 32."""
    levels = draw(st.one_of(st.just(MAX_NESTING), st.integers(1, MAX_NESTING)))
    value: Typed = draw(scalars(limits))
    for _ in range(levels):
        if draw(st.booleans()):
            value = {"M": {draw(names(limits)): value}}
        else:
            value = {"L": [value, *draw(st.lists(scalars(limits), max_size=1))]}
    return value


def _text_of_bytes(seed: str, size: int) -> str:
    """Text of exactly `size` UTF-8 bytes (or as close below as the seed's characters allow, padded with 'a')."""
    out, used = [], 0
    for char in seed * (size // max(1, len(seed.encode("utf-8"))) + 1):
        width = len(char.encode("utf-8"))
        if used + width > size:
            break
        out.append(char)
        used += width
    return "".join(out) + "a" * (size - used)


def wide_attributes(count: int, seed: int) -> Image:
    """`count` attributes of simple values (every scalar type), names unique; as a wide DynamoDB item has them."""
    kinds: list[Callable[[int], Typed]] = [
        lambda i: {"S": f"v{i}"},
        lambda i: {"N": str(i * 7919 - 3)},
        lambda i: {"N": f"{i}.25"},
        lambda i: {"BOOL": i % 2 == 0},
        lambda i: {"NULL": True},
        lambda i: {"B": _b64(i.to_bytes(3, "big"))},
    ]
    return {f"w{seed}_{i:04d}": kinds[(i + seed) % len(kinds)](i) for i in range(count)}


@st.composite
def large_attribute(draw: st.DrawFn, limits: Limits, budget: int) -> Typed:
    """One S or B of tens to hundreds of KB, within `budget` bytes: beyond CrateDB's 32 KB text limit too."""
    size = draw(st.integers(min(33_000, budget), budget))
    if draw(st.booleans()):
        return {"B": _b64(draw(st.binary(min_size=1, max_size=16)) * (size // 16))}
    seed = draw(st.text(_characters(limits), min_size=1, max_size=4))
    return {"S": _text_of_bytes(seed, size)}


@dataclass(frozen=True)
class KeySchema:
    hash_name: str
    hash_type: str
    range_name: str | None = None
    range_type: str | None = None

    @property
    def types(self) -> dict[str, str]:
        types = {self.hash_name: self.hash_type}
        if self.range_name is not None:
            types[self.range_name] = str(self.range_type)
        return types


@functools.cache
def _key_names(limits: Limits) -> st.SearchStrategy[str]:
    return names(limits).filter(limits.key_name)


@st.composite
def key_schemas(draw: st.DrawFn, limits: Limits) -> KeySchema:
    key_names = _key_names(limits)
    hash_name = draw(key_names)
    hash_type = draw(st.sampled_from("SNB"))
    if draw(st.booleans()):
        return KeySchema(hash_name, hash_type)
    range_name = draw(key_names.filter(lambda name: name != hash_name))
    return KeySchema(hash_name, hash_type, range_name, draw(st.sampled_from("SNB")))


@st.composite
def key_values(draw: st.DrawFn, key_type: str, max_bytes: int, limits: Limits) -> Typed:
    """A key attribute value: S and B of 1 byte up to the limit (often exactly at it), any N."""
    if key_type == "N":
        return {"N": draw(number_texts())}
    at_limit = draw(st.integers(0, 4)) == 0
    if key_type == "B":
        if at_limit:
            return {"B": _b64((draw(st.binary(min_size=1, max_size=8)) * max_bytes)[:max_bytes])}
        return {"B": _b64(draw(st.binary(min_size=1, max_size=40)))}
    chars = _characters(limits)
    if at_limit:
        return {"S": _text_of_bytes(draw(st.text(chars, min_size=1, max_size=4)), max_bytes)}
    return {"S": draw(st.text(chars, min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= max_bytes))}


def key_identity(schema: KeySchema, key: Image) -> tuple[Any, ...]:
    """A key as DynamoDB tells items apart: N by value ("1" is "1.0"), B by its bytes, S by its text."""
    identity: list[Any] = []
    for name, key_type in sorted(schema.types.items()):
        inner = key[name][key_type]
        identity.append(
            number_value(inner) if key_type == "N" else base64.b64decode(inner) if key_type == "B" else inner
        )
    return tuple(identity)


@dataclass
class Event:
    op: str  # INSERT, MODIFY, REMOVE
    key: Image
    new: Image | None
    old: Image | None
    micros: int
    ttl: bool = False


@dataclass
class Scenario:
    """One generated stream: replayed in batches of `batch_size`, bare lines or (envelope) Lambda envelopes."""

    schema: KeySchema
    events: list[Event]
    batch_size: int
    precision: str = "MICROSECOND"
    envelope: bool = False
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # hypothesis prints this for a failing example: keep it readable, if long
        events = ", ".join(
            f"{e.op}({json.dumps(e.key, ensure_ascii=True)[:120]}, {len(e.new or {})} attrs, {e.micros - T0} us)"
            for e in self.events
        )
        return (
            f"Scenario(schema={self.schema}, batch_size={self.batch_size}, precision={self.precision}, "
            f"envelope={self.envelope}, notes={self.notes}, events=[{events}])"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer: the short form too
        printer.text(repr(self))


@st.composite
def images(draw: st.DrawFn, key: Image, limits: Limits, kind: str = "plain") -> tuple[Image, str | None]:
    """A whole item (key attributes included) within 400 KB; `kind` wide (200 to 2,000 attributes) or large (one
    attribute of tens to hundreds of KB)."""
    image: Image = dict(key)
    note = None
    if kind == "wide":
        count = draw(st.integers(200, MAX_WIDE))
        image.update({k: v for k, v in wide_attributes(count, draw(st.integers(0, 9))).items() if k not in key})
        note = f"wide {count}"
    attributes = draw(st.dictionaries(names(limits), documents(limits), max_size=6))
    image.update({name: value for name, value in attributes.items() if name not in key})
    if kind == "large":
        name = draw(names(limits).filter(lambda n: n not in image))
        budget = MAX_ITEM_BYTES - item_size(image) - len(name.encode("utf-8")) - 3
        if budget > 1000:
            image[name] = draw(large_attribute(limits, budget))
            note = f"large {item_size(image)} B"
    while item_size(image) > MAX_ITEM_BYTES:  # the generated extras may overshoot: drop non-key attributes
        image.pop(next(name for name in reversed(image) if name not in key))
    return image, note


# Most scenarios are plain; wide and large items are slow to make and to write, so about one in twelve each.
# (In the middle of the list: hypothesis favours the ends of a range, and shrinks towards the first.)
KINDS = ("plain",) * 5 + ("wide",) + ("plain",) * 5 + ("large",) + ("plain",) * 2


@st.composite
def scenarios(draw: st.DrawFn, limits: Limits = Limits()) -> Scenario:
    schema = draw(key_schemas(limits))

    def one_key() -> st.SearchStrategy[Image]:
        parts = {schema.hash_name: key_values(schema.hash_type, HASH_KEY_BYTES, limits)}
        if schema.range_name is not None:
            parts[schema.range_name] = key_values(str(schema.range_type), RANGE_KEY_BYTES, limits)
        return st.fixed_dictionaries(parts)

    pool = draw(st.lists(one_key(), min_size=1, max_size=5, unique_by=lambda k: key_identity(schema, k)))
    steps = draw(st.lists(st.tuples(st.integers(0, len(pool) - 1), st.integers(0, 3)), min_size=1, max_size=16))
    kind = draw(st.sampled_from(KINDS))
    special = draw(st.integers(0, len(steps) - 1))  # the step that writes the wide or large item (if a write)
    micros = T0 + draw(st.integers(0, 10**9))
    state: dict[int, Image] = {}
    events: list[Event] = []
    notes: list[str] = []
    for step, (index, choice) in enumerate(steps):
        micros += draw(st.sampled_from((0, 0, 1, 999, 1000, 250_000, 60_000_000)))
        key, current = pool[index], state.get(index)
        if current is not None and choice == 0:
            events.append(Event("REMOVE", key, None, current, micros, ttl=draw(st.booleans())))
            del state[index]
            continue
        new, note = draw(images(key, limits, kind if step == special else "plain"))
        if note:
            notes.append(note)
        events.append(Event("INSERT" if current is None else "MODIFY", key, new, current, micros))
        state[index] = new
    batch_size = draw(st.one_of(st.integers(1, 3), st.integers(1, 60), st.integers(1, 10_000)))
    precision = draw(st.sampled_from(("MICROSECOND", "MICROSECOND", "MILLISECOND")))
    return Scenario(schema, events, batch_size, precision, draw(st.booleans()), notes)


# ---- the records -------------------------------------------------------------------------------------------


def record(event: Event, number: int, precision: str, table: str = "generated") -> dict[str, Any]:
    """The event as Kinesis Data Streams for DynamoDB publishes it (NEW_AND_OLD_IMAGES)."""
    change: dict[str, Any] = {
        "ApproximateCreationDateTime": event.micros // 1000 if precision == "MILLISECOND" else event.micros,
        "Keys": event.key,
    }
    if event.new is not None:
        change["NewImage"] = event.new
    if event.old is not None:
        change["OldImage"] = event.old
    change["SizeBytes"] = item_size(event.new or event.old or event.key)
    change["ApproximateCreationDateTimePrecision"] = precision
    out: dict[str, Any] = {
        "awsRegion": "us-east-1",
        "eventID": f"{number:032x}",
        "eventName": event.op,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": change,
        "eventSource": "aws:dynamodb",
    }
    if event.ttl:
        out["userIdentity"] = dict(TTL_IDENTITY)
    return out


def records(scenario: Scenario) -> Iterator[dict[str, Any]]:
    for number, event in enumerate(scenario.events, start=1):
        yield record(event, number, scenario.precision)


# ---- the reference model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetOf:
    """A DynamoDB set (SS, NS, BS) in the reference: no order, no duplicates; the target gives a sorted list."""

    tag: str
    members: tuple[Any, ...]


def plain(value: Typed) -> Any:
    """DynamoDB JSON -> the exact value the relay must give back (docs/type-mapping.md), written from the docs."""
    ((tag, inner),) = value.items()
    if tag in ("S", "B", "BOOL"):  # B: the base64 text as the stream sent it
        return inner
    if tag == "N":
        return number_value(inner)
    if tag == "NULL":
        return None
    if tag == "M":
        return {name: plain(child) for name, child in inner.items()}
    if tag == "L":
        return [plain(child) for child in inner]
    if tag == "NS":
        return SetOf(tag, tuple(number_value(member) for member in inner))
    return SetOf(tag, tuple(inner))  # SS, BS


def final_state(schema: KeySchema, events: Iterable[Event]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The table as DynamoDB holds it after `events` (in stream order): key identity -> plain item."""
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    for event in events:
        identity = key_identity(schema, event.key)
        if event.op == "REMOVE":
            table.pop(identity, None)
        else:
            assert event.new is not None
            table[identity] = {name: plain(value) for name, value in event.new.items()}
    return table


def stored_identity(schema: KeySchema, key: dict[str, Any]) -> tuple[Any, ...]:
    """key_identity of a key as a target gives it back (N as int or Decimal, B as base64 text)."""
    identity: list[Any] = []
    for name, key_type in sorted(schema.types.items()):
        value = key[name]
        identity.append(Decimal(value) if key_type == "N" else base64.b64decode(value) if key_type == "B" else value)
    return tuple(identity)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def held_as_number(value: Decimal) -> bool:
    """Whether a JSON number through the CrateDB driver keeps `value`: a 64-bit integer, or a decimal that a double
    reads back as exactly (docs/type-mapping.md); other numbers come back as their exact decimal text."""
    if value == value.to_integral_value():
        return -(2**63) <= value <= 2**63 - 1
    return Decimal(repr(float(value))) == value


def differences(expected: Any, got: Any, path: str = "", numbers_as_text: bool = False) -> Iterator[str]:
    """Where `got` (a target's comparable item) differs from `expected` (plain), strictly.

    numbers_as_text: CrateDB, where a number no JSON double or 64-bit integer holds comes back as its exact decimal
    text (docs/type-mapping.md); such a number must then be text of exactly that value, and only such a number.
    """
    if isinstance(expected, SetOf):
        yield from _set_differences(expected, got, path, numbers_as_text)
    elif isinstance(expected, dict):
        if not isinstance(got, dict):
            yield f"{path or '<item>'}: expected a map, got {_show(got)}"
            return
        for name in expected.keys() - got.keys():
            yield f"{path}[{name!r:.80}]: missing"
        for name in got.keys() - expected.keys():
            yield f"{path}[{name!r:.80}]: unexpected {_show(got[name])}"
        for name in expected.keys() & got.keys():
            yield from differences(expected[name], got[name], f"{path}[{name!r:.80}]", numbers_as_text)
    elif isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            yield f"{path}: expected a list of {len(expected)}, got {_show(got)}"
            return
        for index, (want, have) in enumerate(zip(expected, got, strict=True)):
            yield from differences(want, have, f"{path}[{index}]", numbers_as_text)
    elif _is_number(expected):
        if not _number_matches(Decimal(expected), got, numbers_as_text):
            yield f"{path}: expected the number {expected}, got {_show(got)}"
    elif type(expected) is not type(got) or expected != got:
        yield f"{path}: expected {_show(expected)}, got {_show(got)}"


def _number_matches(want: Decimal, got: Any, numbers_as_text: bool) -> bool:
    if _is_number(got):
        return Decimal(got) == want  # exact: int and Decimal compare by value
    if numbers_as_text and isinstance(got, str) and not held_as_number(want):
        try:
            return Decimal(got) == want
        except ArithmeticError:
            return False
    return False


def _set_differences(expected: SetOf, got: Any, path: str, numbers_as_text: bool) -> Iterator[str]:
    if not isinstance(got, list) or len(got) != len(expected.members):
        yield f"{path}: expected a {expected.tag} of {len(expected.members)}, got {_show(got)}"
        return
    if expected.tag != "NS":
        if not all(isinstance(member, str) for member in got) or sorted(got) != sorted(expected.members):
            yield f"{path}: expected the {expected.tag} {sorted(expected.members)!r:.200}, got {_show(got)}"
        elif got != sorted(got):
            yield f"{path}: {expected.tag} not in sorted order: {_show(got)}"
        return
    values = []
    for member in got:
        if _is_number(member) or (numbers_as_text and isinstance(member, str)):
            try:
                values.append(Decimal(member))
                continue
            except ArithmeticError:
                pass
        yield f"{path}: NS member {_show(member)} is not a number"
        return
    want = sorted(expected.members)
    if sorted(values) != want:
        yield f"{path}: expected the NS {[str(v) for v in want]!r:.200}, got {_show(got)}"
        return
    for member, value in zip(got, values, strict=True):  # text only for what needs it
        if isinstance(member, str) and held_as_number(value):
            yield f"{path}: NS member {member!r} came back as text"
    if values != sorted(values):
        yield f"{path}: NS not in numeric order: {_show(got)}"


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:160]}{'...' if len(text) > 160 else ''}"


def compare_tables(
    expected: dict[tuple[Any, ...], dict[str, Any]],
    got: dict[tuple[Any, ...], Any],
    numbers_as_text: bool,
    limit: int = 8,
) -> list[str]:
    """Human-readable differences between two tables keyed by identity (at most `limit` lines)."""
    problems: list[str] = []
    for identity in expected.keys() - got.keys():
        problems.append(f"row missing: {_show(identity)}")
    for identity in got.keys() - expected.keys():
        problems.append(f"row unexpected: {_show(identity)}")
    for identity in expected.keys() & got.keys():
        for problem in differences(expected[identity], got[identity], numbers_as_text=numbers_as_text):
            problems.append(f"row {_show(identity)[:80]}: {problem}")
            if len(problems) >= limit:
                return problems
    return problems[:limit]


def fixed(schema: KeySchema, images_in_order: Sequence[tuple[str, Image]], batch_size: int, **kw: Any) -> Scenario:
    """A hand-made scenario: (op, image) pairs in stream order (REMOVE's image: the key), 1 s apart."""
    events, state = [], {}
    for number, (op, image) in enumerate(images_in_order):
        key = {name: image[name] for name in schema.types}
        identity = key_identity(schema, key)
        current = state.get(identity)
        new = None if op == "REMOVE" else image
        events.append(Event(op, key, new, current, T0 + number * 1_000_000))
        if new is None:
            state.pop(identity, None)
        else:
            state[identity] = new
    return Scenario(schema, events, batch_size, **kw)
