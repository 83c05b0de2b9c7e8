"""Split an item into the three columns of a target row: pk, data (queryable) and aux (kept verbatim).

`data` is an OBJECT(DYNAMIC) column in CrateDB: every new key creates a typed sub-column on the fly, so a value that
CrateDB would reject, or store as something else, must not go there. Such attributes go to `aux`, an
OBJECT(IGNORED) column that stores any JSON as is. The rules below come from reading CrateDB's source (crate/crate):

* Object keys, `ColumnIdent.validateObjectKey`: a key must not contain '.' ("contains a dot") or '['
  ("conflicts with subscript pattern"), nor tab, newline or carriage return ("illegal whitespace"). Top-level
  column names must also not match the system-column pattern (`_a`, `_foo_bar`: `validateColumnName`). The relay
  also refuses every '_'-prefixed key, the empty key and ']': stricter than CrateDB, so that any key in `data`
  would stay valid even as a column name and in a subscript.
* Arrays, `DataTypes.valueFromList` / `DynamicIndexer.throwOnNestedArray`: "Dynamic nested arrays are not
  supported"; "Mixed dataTypes inside a list are not supported", except that long and double mix silently
  (ints become doubles), which would alter the values, so that counts as unsafe as well.
* Numbers: integers are mapped as BIGINT (signed 64 bit), other numbers as DOUBLE.
* Text: indexed sub-columns hold at most 32766 UTF-8 bytes per value (Lucene's term limit, "immense term").
* Depth: the index settings carry `index.mapping.depth.limit` (default 20, counted from the document root).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Union

from kcl_relay.cdc import speedups
from kcl_relay.cdc.event import Item

if TYPE_CHECKING:
    from kcl_relay.mapping.spec import TableMapping

__all__ = ["MAX_OBJECT_DEPTH", "MAX_TEXT_BYTES", "Row", "crate_safe", "split", "valid_object_key"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TEXT_BYTES = 32766
# Objects within one attribute. The limit of 20 also counts the root document and the `data` column; keep a margin.
MAX_OBJECT_DEPTH = 16
_FORBIDDEN_KEY_CHARS = frozenset(".[]\t\n\r")

# The CrateDB type an attribute would get: a scalar kind, None (null: fits anything), an object's shape per key,
# or a list's element shape.
Shape = Union[str, None, dict[str, "Shape"], "_ListShape"]


@dataclass(frozen=True)
class _ListShape:
    element: Shape


class _Unsafe(Exception):
    """Raised inside the walk as soon as one value does not fit; cheaper than threading results."""


@dataclass(frozen=True)
class Row:
    pk: dict[str, Any]
    data: dict[str, Any]
    aux: dict[str, Any]
    # With a mapping (kcl_relay/mapping): column name -> value for the mapped columns, and how many attribute
    # values did not fit their column's type (those went to aux, intact). Plain class-level defaults: the C path
    # (_speedups.c) makes rows without __init__, setting pk, data and aux only.
    columns: dict[str, Any] | None = None
    misfits: int = 0


def valid_object_key(name: str) -> bool:
    """Whether CrateDB accepts `name` as a key of a dynamic object (and so as a sub-column), and reads it back.

    Not a name with a character beyond U+FFFF (an emoji, say): CrateDB 6.4.3 stores the row, but its real-time Get of
    that row (the relay's row-state read before a REMOVE, a primary-key SELECT) then fails with "Invalid UTF-8: Illegal
    surrogate character" (measured: 197 of 200 such names, plain INSERT then Get; never for such characters in
    values), which would stall the shard at the item's next change. Such an attribute goes to aux, whose names are
    stored escaped (sink/cratedb.py)."""
    return (
        bool(name)
        and name[0] != "_"
        and _FORBIDDEN_KEY_CHARS.isdisjoint(name)
        and (name.isascii() or max(name) <= "\uffff")
    )


def _text_fits(value: str) -> bool:
    if len(value) * 4 <= MAX_TEXT_BYTES:  # fast path: no UTF-8 character is longer than 4 bytes
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate cannot be stored as text at all
            return False
        return True
    try:
        return len(value.encode("utf-8")) <= MAX_TEXT_BYTES
    except UnicodeEncodeError:
        return False


def _number_shape(value: int | Decimal | float) -> str:
    if isinstance(value, int):
        # CrateDB 6.4.3 refuses the two ends of BIGINT's own range ("exceeds allowed range for column of type bigint")
        if INT64_MIN < value < INT64_MAX:
            return "int"
        raise _Unsafe
    if isinstance(value, Decimal):
        if not value.is_finite() or value.adjusted() >= 19:  # |value| >= 1E+19 > 2**63: neither BIGINT nor exact
            raise _Unsafe
        if value == value.to_integral_value():
            return _number_shape(int(value))
        # DOUBLE keeps the value only if the nearest double reads back as the same decimal number.
        as_float = float(value)
        if Decimal(repr(as_float)) != value:
            raise _Unsafe
        return "float"
    if value != value or value in (float("inf"), float("-inf")):
        raise _Unsafe
    return "float"


def _number_kind(value: int | Decimal | float) -> str | None:
    """_number_shape for the C path: the kind, or None when CrateDB would not store the number faithfully."""
    try:
        return _number_shape(value)
    except _Unsafe:
        return None


def _merge(a: Shape, b: Shape) -> Shape:
    """The shape both values fit, as CrateDB would need it for two elements of one array."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, str) or isinstance(b, str):
        if a == b:
            return a
        raise _Unsafe
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for key, shape in b.items():
            merged[key] = _merge(merged[key], shape) if key in merged else shape
        return merged
    if isinstance(a, _ListShape) and isinstance(b, _ListShape):
        return _ListShape(_merge(a.element, b.element))
    raise _Unsafe


def _shape(value: Any, depth: int, in_list: bool) -> Shape:
    if value is None:
        return None
    if isinstance(value, str):
        if _text_fits(value):
            return "str"
        raise _Unsafe
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    if isinstance(value, (int, Decimal, float)):
        return _number_shape(value)
    if isinstance(value, dict):
        if depth >= MAX_OBJECT_DEPTH:
            raise _Unsafe
        shape: dict[str, Shape] = {}
        for key, child in value.items():
            if not isinstance(key, str) or not valid_object_key(key):
                raise _Unsafe
            shape[key] = _shape(child, depth + 1, in_list)
        return shape
    if isinstance(value, list):
        # A list anywhere below a list element (directly or through objects) would make a nested array column.
        if in_list:
            raise _Unsafe
        element: Shape = None
        for child in value:
            element = _merge(element, _shape(child, depth, True))
        return _ListShape(element)
    raise _Unsafe  # bytes, sets, ...: never produced by the decoder; refuse rather than guess


def crate_safe(value: Any) -> bool:
    """Whether CrateDB's OBJECT(DYNAMIC) column stores `value` faithfully, at any depth."""
    try:
        _shape(value, 0, False)
    except _Unsafe:
        return False
    return True


def split(key: Item, image: Item, mapping: TableMapping | None = None) -> Row:
    """Key attributes to pk, faithful attributes to data, every other attribute (as a whole) to aux; with a mapping,
    first its columns (kcl_relay/mapping/shape.py: what fits goes to its column only, a misfit to aux)."""
    if mapping is not None and not mapping.empty:
        from kcl_relay.mapping.shape import shape

        shaped = shape(mapping, key, image)
        row = split(key, shaped.rest)
        return Row(row.pk, row.data, {**row.aux, **shaped.aux}, shaped.columns, shaped.misfits)
    native = speedups.native
    if native is not None:
        try:
            return native.split(key, image)
        except speedups.Fallback:  # the C path declined: the reference decides
            pass
        except Exception as error:  # a fault of the C path (or of a hook)
            return speedups.recover("split", error, reference_split, key, image)
    return reference_split(key, image)


def reference_split(key: Item, image: Item) -> Row:
    """split() in pure Python: the reference the C path is tested against."""
    data: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    for name, value in image.items():
        if name in key:
            continue
        if valid_object_key(name) and crate_safe(value):
            data[name] = value
        else:
            aux[name] = value
    return Row(pk=dict(key), data=data, aux=aux)


speedups.configure(
    row=Row, decimal=Decimal, number_kind=_number_kind, max_text_bytes=MAX_TEXT_BYTES, max_object_depth=MAX_OBJECT_DEPTH
)
