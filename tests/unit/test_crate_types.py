"""Which `data` attributes keep their type in CrateDB's dynamic sub-columns (crate_types.py), without a server;
tests/integration/test_cratedb_behaviour.py checks the same against the real one."""

from __future__ import annotations

from decimal import Decimal

from kcl_relay.cdc.layout import Row
from kcl_relay.sink.crate_types import ArrayOf, DataTypes, parse_column_types

SCHEMA_ROWS = [
    ("data", "object"),
    ("data['arr']", "bigint_array"),
    ("data['b']", "boolean"),
    ("data['e']", "undefined_array"),
    ("data['f']", "double precision"),
    ("data['i']", "bigint"),
    ("data['m']", "object"),
    ("data['m']['x']", "bigint"),
    ("data['m']['y']", "object"),
    ("data['m']['y']['z']", "text"),
    ("data['n']", "undefined"),
    ("data['oarr']", "object_array"),
    ("data['oarr']['k']", "bigint"),
    ("data['it''s']", "text"),
    ("data['ts']", "timestamp with time zone"),
    ("other", "text"),
]


def known() -> DataTypes:
    types = DataTypes()
    types.learn(SCHEMA_ROWS)
    return types


def test_parse_column_types() -> None:
    assert parse_column_types(SCHEMA_ROWS) == {
        "arr": ArrayOf("bigint"),
        "b": "boolean",
        "e": ArrayOf("undefined"),
        "f": "double",
        "i": "bigint",
        "m": {"x": "bigint", "y": {"z": "text"}},
        "n": "undefined",
        "oarr": ArrayOf({"k": "bigint"}),
        "it's": "text",
        "ts": "other",
    }


def fit(data: dict, types: DataTypes | None = None) -> tuple[dict, dict, bool]:
    row, grows = (types or known()).fit(Row(pk={"id": "a"}, data=data, aux={"kept": 1}))
    return row.data, {name: value for name, value in row.aux.items() if name != "kept"}, grows


def test_values_of_the_known_type_stay_in_data_and_grow_nothing() -> None:
    data = {"arr": [1, 2], "b": False, "f": 1.5, "i": -3, "m": {"x": 7, "y": {"z": "q"}}, "oarr": [{"k": 1}], "n": None}
    assert fit(data) == (data, {}, False)


def test_a_value_crate_would_cast_goes_to_aux_intact() -> None:
    data = {"i": "42", "b": "true", "f": Decimal("2.5"), "m": {"x": 1.5}, "arr": [Decimal("0.5")], "ts": "2026-01-01"}
    kept, moved, _ = fit(data)
    assert kept == {"f": Decimal("2.5")}
    assert moved == {"i": "42", "b": "true", "m": {"x": 1.5}, "arr": [Decimal("0.5")], "ts": "2026-01-01"}


def test_integers_in_a_double_column_only_while_exact() -> None:
    assert fit({"f": 2**53})[0] == {"f": 2**53}
    assert fit({"f": 2**53 + 1})[1] == {"f": 2**53 + 1}


def test_new_paths_are_assumed_from_the_first_value_and_later_rows_must_agree() -> None:
    types = known()
    assert fit({"new": 1, "m": {"w": "text"}}, types) == ({"new": 1, "m": {"w": "text"}}, {}, True)
    assert types.assumed
    assert fit({"new": "one"}, types) == ({}, {"new": "one"}, False)
    assert fit({"new": 2, "m": {"w": "again"}}, types) == ({"new": 2, "m": {"w": "again"}}, {}, False)


def test_null_empty_lists_and_objects_at_new_paths_create_sub_columns() -> None:
    for value in (None, [], {}):
        assert fit({"fresh": value})[2] is True
    assert fit({"n": None})[2] is False  # an undefined column exists already
    assert fit({"n": "now typed"})[2] is True  # typing an undefined column is a mapping update too
    assert fit({"e": [1]})[2] is True


def test_an_attempt_keeps_what_it_assumed_only_once_committed() -> None:
    """A failed attempt's new paths are new again on the retry: the row adding them is written alone again."""
    types = known()
    types.begin()
    assert fit({"new": 1}, types)[2] is True
    types.begin()  # the attempt failed: the retry starts over
    assert "new" not in types.known and not types.assumed
    assert fit({"new": 1}, types)[2] is True
    types.commit()
    assert types.known["new"] == "bigint"
    types.begin()
    assert fit({"new": 2}, types)[2] is False


def limited(limit: int) -> DataTypes:
    types = DataTypes()
    types.learn([*SCHEMA_ROWS, ("#limit", str(limit))])
    return types


def test_columns_counted_as_crate_counts_them() -> None:
    """Every path is a column (information_schema.columns lists them all): objects, their children, arrays of
    objects and their elements' children, null's undefined column."""
    types = limited(1000)
    assert (types.columns, types.limit) == (len(SCHEMA_ROWS), 1000)
    types.begin()
    fit({"o": {"a": 1, "b": {"c": None}}, "oa": [{"x": 1, "y": {"z": "a"}}], "e2": [], "n": 3}, types)
    types.commit()
    assert types.columns == len(SCHEMA_ROWS) + 4 + 4 + 1  # n was an undefined column: typing it adds none


def test_attributes_past_the_column_limit_go_to_aux_whole() -> None:
    types = limited(len(SCHEMA_ROWS) + 3)
    data, moved, grows = fit({"i": 5, "a": 1, "big": {"x": 1, "y": 2, "z": 3}, "b2": "x", "c": 2, "d": 3}, types)
    assert grows and data == {"i": 5, "a": 1, "b2": "x", "c": 2}  # known paths stay; new ones while they fit
    assert moved == {"big": {"x": 1, "y": 2, "z": 3}, "d": 3}
    assert fit({"a": 7, "e": 1}, types) == ({"a": 7}, {"e": 1}, False)  # the attempt's own assumptions count
