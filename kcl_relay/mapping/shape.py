"""An item through a mapping: (kept) -> the mapped columns + the rest (which layout.split puts in pk/data/aux),
and back.

A column's value is the attribute converted to the column's type, only when converting back gives exactly the
attribute again (so an ISO timestamp must be written the way the column writes it back, a DOUBLE must hold the
number exactly, a NUMERIC(p, s) must have room for its digits). Such a value is stored in the column alone. A value
that does not fit goes to aux as it is, with its whole top-level attribute (where its siblings stay too), and is
counted; a null or a missing path leaves the column NULL and the item as it was. So restore(shape(item)) == item
for every item, and the rules are the same on every database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from kcl_relay.cdc.jsonenc import canonical_decimal
from kcl_relay.cdc.layout import INT64_MAX, INT64_MIN, crate_safe
from kcl_relay.mapping.spec import Column, ColumnType, TableMapping

__all__ = ["Shaped", "fit", "keep", "restore", "shape", "to_item"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Year 1 to 9999 (datetime's range, and far inside every database's), in milliseconds since the epoch.
MIN_MS, MAX_MS = -62135596800000, 253402300799999
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{3})?Z")
MAX_TEXT_BYTES = 32766  # as in data: an indexed TEXT value (CrateDB, Lucene's term limit)


class _Misfit(Exception):
    pass


@dataclass
class Shaped:
    columns: dict[str, Any] = field(default_factory=dict)  # column name -> typed value (see fit)
    rest: dict[str, Any] = field(default_factory=dict)  # the item without what the columns hold
    aux: dict[str, Any] = field(default_factory=dict)  # top-level attributes a misfit sent to aux as a whole
    misfits: int = 0


def _ms_text(ms: int, always_fraction: bool) -> str:
    moment = EPOCH + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = ms % 1000
    return f"{text}.{fraction:03d}Z" if fraction or always_fraction else f"{text}Z"


def _timestamp(value: Any, source: str) -> int:
    """Milliseconds since the epoch (UTC)."""
    if source in ("epoch-s", "epoch-ms"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Misfit
        ms = value * 1000 if source == "epoch-s" else value
    else:
        match = _ISO.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise _Misfit
        try:
            year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
            moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
        except ValueError:  # month 13, February 30th, ...
            raise _Misfit from None
        fraction = match.group(7)
        ms = (moment - EPOCH) // timedelta(milliseconds=1) + (int(fraction[1:]) if fraction else 0)
        if _ms_text(ms, source == "iso-ms") != value:  # "iso" writes no ".000": that text needs "iso-ms"
            raise _Misfit
    if not MIN_MS <= ms <= MAX_MS:
        raise _Misfit
    return ms


def _double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise _Misfit
    as_float = float(value)
    if as_float != as_float or as_float in (float("inf"), float("-inf")) or Decimal(repr(as_float)) != value:
        raise _Misfit
    return as_float


def _numeric(value: Any, kind: ColumnType) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise _Misfit
    number = Decimal(value)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    scale = max(-exponent, 0)
    whole = max(number.adjusted() + 1, 0) if number else 0
    if scale > kind.scale or whole > kind.precision - kind.scale:
        raise _Misfit
    return number


def _scalar(value: Any, kind: ColumnType, source: str | None) -> Any:
    base = kind.base
    if base == "TEXT":
        if not isinstance(value, str) or "\x00" in value:
            raise _Misfit
        try:
            if len(value.encode("utf-8")) > MAX_TEXT_BYTES:
                raise _Misfit
        except UnicodeEncodeError:
            raise _Misfit from None
        return value
    if base == "BIGINT":
        if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN < value < INT64_MAX:
            raise _Misfit
        return value
    if base == "DOUBLE":
        return _double(value)
    if base == "NUMERIC":
        return _numeric(value, kind)
    if base == "BOOLEAN":
        if not isinstance(value, bool):
            raise _Misfit
        return value
    if base == "TIMESTAMP":
        assert source is not None
        return _timestamp(value, source)
    # OBJECT: what data could hold (typed sub-columns in CrateDB), and no NUL (PostgreSQL's JSONB)
    if not isinstance(value, dict) or not crate_safe(value) or "\\u0000" in _text(value):
        raise _Misfit
    return value


def _text(value: Any) -> str:
    from kcl_relay.cdc.jsonenc import dumps

    return dumps(value)


def fit(column: Column, value: Any) -> Any:
    """The column's value for an attribute value (not None); raises _Misfit when it would not come back exactly."""
    kind = column.type
    if not kind.array:
        return _scalar(value, kind, column.source)
    if not isinstance(value, list):
        raise _Misfit
    element = ColumnType(kind.base, False, kind.precision, kind.scale)
    return [None if item is None else _scalar(item, element, column.source) for item in value]


def _back(kind: ColumnType, source: str | None, value: Any) -> Any:
    if value is None:
        return None
    base = kind.base
    if base == "DOUBLE":
        return canonical_decimal(Decimal(repr(float(value))))
    if base == "NUMERIC":
        return canonical_decimal(Decimal(str(value)) if not isinstance(value, Decimal) else value)
    if base == "TIMESTAMP":
        ms = int(value)
        if source == "epoch-ms":
            return ms
        if source == "epoch-s":
            return ms // 1000
        return _ms_text(ms, source == "iso-ms")
    if base == "BIGINT":
        return int(value)
    return value


def to_item(column: Column, value: Any) -> Any:
    """A column's value (as fit() made it; numbers as the driver gives them) back as the attribute's value."""
    kind = column.type
    if not kind.array:
        return _back(kind, column.source, value)
    element = ColumnType(kind.base, False, kind.precision, kind.scale)
    return [_back(element, column.source, item) for item in value]


_MISSING = object()


def _get(item: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = item
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value


def _project(value: Any, paths: list[tuple[str, ...]]) -> Any:
    """`value` keeping only what the (relative) paths name: an empty path keeps all of it."""
    if any(not path for path in paths) or not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for name, child in value.items():
        below = [path[1:] for path in paths if path[0] == name]
        if below:
            kept[name] = _project(child, below)
    return kept


def _drop(value: dict[str, Any], path: tuple[str, ...]) -> None:
    parent: Any = value
    for name in path[:-1]:
        parent = parent.get(name) if isinstance(parent, dict) else None
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _copy(child) for name, child in value.items()}
    return value


def keep(mapping: TableMapping, key: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """The image without what include/exclude leave out (the key attributes always stay)."""
    if mapping.include is None and not mapping.exclude:
        return image
    kept = _project(image, [*mapping.include, *((name,) for name in key)]) if mapping.include is not None else image
    if mapping.exclude:
        kept = _copy(kept)
        for path in mapping.exclude:
            _drop(kept, path)
    return kept


def shape(mapping: TableMapping, key: dict[str, Any], image: dict[str, Any]) -> Shaped:
    """Split the (kept) image into the mapped columns, the rest and the attributes misfits sent to aux."""
    item = keep(mapping, key, image)
    shaped = Shaped()
    found: list[tuple[Column, Any]] = []
    broken: set[str] = set()
    for column in mapping.columns:
        value = _get(item, column.path)
        if value is _MISSING or value is None:
            continue
        try:
            found.append((column, fit(column, value)))
        except _Misfit:
            shaped.misfits += 1
            broken.add(column.path[0])
    rest = dict(item)
    for name in broken:
        shaped.aux[name] = rest.pop(name)
    nested = {column.path[0] for column, _value in found if len(column.path) > 1 and column.path[0] not in broken}
    for name in nested:
        rest[name] = _copy(rest[name])
    for column, value in found:
        if column.path[0] in broken:
            continue
        shaped.columns[column.name] = value
        _drop(rest, column.path)
    shaped.rest = rest
    return shaped


def restore(mapping: TableMapping, rest: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any]:
    """The item again: the rest (pk | data | aux) with each non-NULL column's value put back at its path."""
    item = dict(rest)
    for column in mapping.columns:
        value = columns.get(column.name)
        if value is None:
            continue
        parent: Any = item
        for index, name in enumerate(column.path[:-1]):
            child = parent.get(name)
            if not isinstance(child, dict):
                raise ValueError(
                    f"column {column.name}: the row holds no object at {'.'.join(column.path[: index + 1])}"
                )
            parent[name] = child = dict(child)
            parent = child
        parent[column.path[-1]] = to_item(column, value)
    return item
