"""DynamoDB typed JSON ({"S": "x"}, {"N": "1.5"}, ...) to plain, exact Python values."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kcl_relay.cdc import speedups
from kcl_relay.cdc.event import Item
from kcl_relay.cdc.jsonenc import canonical_decimal

__all__ = ["AttributeValueError", "from_attribute", "from_item", "parse_number"]

# Decimal() alone also takes "NaN", "Infinity", "1_000", blanks and digits of other scripts ("١٢"): none is a
# DynamoDB number, hence this pattern, ASCII only.
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
MAX_DIGITS = 38  # DynamoDB: up to 38 digits of precision, magnitudes from 1E-130 to below 1E+126
MIN_ADJUSTED, MAX_ADJUSTED = -130, 125
# DynamoDB nests documents (M, L) at most 32 levels deep; refusing deeper input keeps every later recursive walk
# (layout, JSON encoding, the sinks) far from Python's recursion limit.
MAX_NESTING = 32


class AttributeValueError(ValueError):
    """A bad attribute value; `path` grows while the error unwinds so the happy path builds no path strings."""

    def __init__(self, problem: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path

    def within(self, segment: str | int) -> AttributeValueError:
        return AttributeValueError(self.problem, (segment, *self.path))

    def __str__(self) -> str:
        if not self.path:
            return self.problem
        return f"attribute {''.join(_segment(s, i == 0) for i, s in enumerate(self.path))}: {self.problem}"


def _segment(name: str | int, first: bool) -> str:
    if isinstance(name, int):  # a list index
        return f"[{name}]"
    # Names are arbitrary text: keep the reason on one short line whatever they contain.
    shown = name if name.isprintable() and 0 < len(name) <= 60 else repr(name[:60])
    return shown if first else f".{shown}"


def parse_number(text: Any) -> int | Decimal:
    """A DynamoDB N string as int when integral, else as a Decimal without trailing zeros, exactly."""
    if isinstance(text, str) and len(text) <= MAX_DIGITS and text.isascii():
        # Fast path for the common plain integer; isascii() keeps out digits int() accepts from other scripts.
        unsigned = text[1:] if text.startswith("-") else text
        if unsigned.isdigit():
            return int(text)
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        raise AttributeValueError(f"not a DynamoDB number: {text!r:.60}")
    try:
        number = Decimal(text)
    except ArithmeticError:  # InvalidOperation: an exponent beyond what Decimal holds (|exponent| >= 10**18)
        raise AttributeValueError(f"number out of DynamoDB's range or precision: {text!r:.60}") from None
    if number:  # zero has no magnitude to check
        digits = number.as_tuple().digits  # the coefficient: no leading zeros, maybe trailing ones
        significant = len(digits)
        while digits[significant - 1] == 0:
            significant -= 1
        if significant > MAX_DIGITS or not MIN_ADJUSTED <= number.adjusted() <= MAX_ADJUSTED:
            raise AttributeValueError(f"number out of DynamoDB's range or precision: {text!r:.60}")
    return canonical_decimal(number)


def _binary(text: Any) -> str:
    if not isinstance(text, str):
        raise AttributeValueError(f"binary value is not base64 text: {text!r:.60}")
    try:
        base64.b64decode(text, validate=True)
    except ValueError as error:  # binascii.Error is a ValueError
        raise AttributeValueError(f"binary value is not valid base64: {error}") from None
    return text


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise AttributeValueError(f"S value is not a string: {value!r:.60}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise AttributeValueError(f"BOOL value is not true or false: {value!r:.60}")
    return value


def _null(value: Any) -> None:
    if value is not True:  # DynamoDB always writes {"NULL": true}
        raise AttributeValueError(f"NULL value is not true: {value!r:.60}")
    return None


def _map(value: Any, depth: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AttributeValueError("M value is not an object")
    result: dict[str, Any] = {}
    for name, child in value.items():
        try:
            result[name] = from_attribute(child, depth)
        except AttributeValueError as error:
            raise error.within(name) from None
    return result


def _list(value: Any, depth: int) -> list[Any]:
    if not isinstance(value, list):
        raise AttributeValueError("L value is not an array")
    result = []
    for index, child in enumerate(value):
        try:
            result.append(from_attribute(child, depth))
        except AttributeValueError as error:
            raise error.within(index) from None
    return result


def _set(tag: str, element: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def convert(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise AttributeValueError(f"{tag} value is not an array")
        # A set has no order and no duplicates; sorting gives every replica of an item the same JSON.
        return sorted({element(member) for member in value})

    return convert


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "S": _string,
    "N": parse_number,
    "B": _binary,
    "BOOL": _bool,
    "NULL": _null,
    "SS": _set("SS", _string),
    "NS": _set("NS", parse_number),
    "BS": _set("BS", _binary),
}


def from_attribute(av: Any, depth: int = 0) -> Any:
    """One typed attribute value, recursively. Raises ValueError (AttributeValueError) naming the path when invalid.

    `depth` counts the documents (M, L) around `av`.
    """
    if not isinstance(av, dict) or len(av) != 1:
        raise AttributeValueError(f"expected an object with exactly one type tag, got {_describe(av)}")
    ((tag, value),) = av.items()
    if tag == "S" and value.__class__ is str:  # the most frequent case, without a call
        return value
    if tag == "M" or tag == "L":
        if depth >= MAX_NESTING:
            raise AttributeValueError(f"documents nested deeper than {MAX_NESTING} levels")
        return _map(value, depth + 1) if tag == "M" else _list(value, depth + 1)
    converter = _CONVERTERS.get(tag)
    if converter is None:
        raise AttributeValueError(f"unknown type tag {tag!r:.40}")
    return converter(value)


def from_item(image: Any) -> Item:
    """A whole image (NewImage, OldImage or Keys) to a plain item."""
    native = speedups.native
    if native is not None:
        try:
            return native.from_item(image)
        except speedups.Fallback:  # the C path declined: the reference decides, with its own errors
            pass
        except Exception as error:  # a hook refused bad input, or a fault of the C path
            return speedups.recover("from_item", error, reference_from_item, image)
    return reference_from_item(image)


def reference_from_item(image: Any) -> Item:
    """from_item() in pure Python: the reference the C path is tested against."""
    if not isinstance(image, dict):
        raise AttributeValueError(f"item is not an object: {_describe(image)}")
    result: Item = {}
    for name, av in image.items():
        try:
            result[name] = from_attribute(av)
        except AttributeValueError as error:
            raise error.within(name) from None
    return result


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with tags {sorted(value)[:4]}"
    return type(value).__name__


speedups.configure(
    decimal=Decimal, parse_number=parse_number, binary=_binary, max_digits=MAX_DIGITS, max_nesting=MAX_NESTING
)
