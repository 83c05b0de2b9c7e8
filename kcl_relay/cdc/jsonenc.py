"""Canonical, exact JSON: the text form of keys and items everywhere in the relay.

The stdlib encoder cannot write a Decimal without a float round trip, and its C fast path ignores subclass
overrides, so this module walks the value itself and reuses the stdlib only for string escaping.
"""

from __future__ import annotations

import json
from decimal import Decimal
from json.encoder import encode_basestring  # the C escaper when available
from typing import Any

from kcl_relay.cdc import speedups

__all__ = ["canonical_decimal", "decimal_text", "dumps", "loads"]


# Python refuses int<->str conversions past 4300 digits; refusing earlier also stops "1e999999999" from
# building a gigantic int. DynamoDB numbers stay far below (magnitude < 1E+126).
MAX_INTEGER_DIGITS = 4300


def canonical_decimal(value: Decimal) -> int | Decimal:
    """The same number as int when integral, else as Decimal without trailing zeros. Exact, context-free."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(f"number too large: {value}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    # Strip trailing zeros by hand: normalize() would round to the context's 28 digits, and DynamoDB has 38.
    cut = len(digits)
    while exponent < 0 and cut > 0 and digits[cut - 1] == 0:
        cut -= 1
        exponent += 1
    if exponent >= 0 or cut == 0:  # cut == 0: every digit was a zero
        return int(value)
    return Decimal((sign, digits[:cut], exponent))


def decimal_text(value: Decimal) -> str:
    """The exact, canonical JSON number for a finite Decimal: integral ones as integers, no trailing zeros."""
    # str() of a Decimal is always a valid JSON number (e.g. "1.5E-130"), never with a float round trip.
    return str(canonical_decimal(value))


def _encode(value: Any, out: list[str]) -> None:
    # Order matters: bool is an int subclass.
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, Decimal):
        out.append(decimal_text(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"JSON has no representation for {value}")
        out.append(float.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, not {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append(encode_basestring(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, element in enumerate(value):
            if i:
                out.append(",")
            _encode(element, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """Compact, key-sorted, non-ASCII-preserving JSON with exact numbers; NaN and Infinity raise ValueError."""
    native = speedups.native
    if native is not None:
        try:
            return native.dumps(value)
        except speedups.Fallback:  # the C path declined: the reference decides, with its own errors
            pass
        except Exception as error:  # a hook refused the value, or a fault of the C path
            return speedups.recover("dumps", error, reference_dumps, value)
    return reference_dumps(value)


def reference_dumps(value: Any) -> str:
    """dumps() in pure Python: the reference the C path is tested against."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


speedups.configure(decimal=Decimal, decimal_text=decimal_text)


def _parse_number(text: str) -> int | Decimal:
    # "1.0" and "1e2" are integral: keep the Item convention (integral numbers are int).
    return canonical_decimal(Decimal(text))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not a number the relay accepts")


def loads(text: str | bytes) -> Any:
    """Parse JSON with exact numbers: integral ones as int, others as Decimal; NaN/Infinity raise ValueError."""
    return json.loads(text, parse_float=_parse_number, parse_constant=_reject_constant)
