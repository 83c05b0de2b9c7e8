"""The mapping file's checks and the shaping of items into columns and back (the same on every database)."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.cdc.layout import split
from kcl_relay.mapping.shape import restore, shape
from kcl_relay.mapping.spec import MappingError, load_mapping, parse_mapping
from kcl_relay.mapping.table import added_columns, from_stored, stored_text
from kcl_relay.source.url import SourceError, parse_source

MAPPING = """
[columns]
at = { path = "at", type = "TIMESTAMP" }
at_ms = { path = "atMs", type = "TIMESTAMP", from = "epoch-ms" }
at_s = { path = "atS", type = "TIMESTAMP", from = "epoch-s" }
amount = { path = "total.amount", type = "NUMERIC(12, 2)" }
score = { path = "score", type = "DOUBLE" }
count = { path = "count", type = "BIGINT" }
name = { path = "name", type = "TEXT" }
ok = { path = "ok", type = "BOOLEAN" }
meta = { path = "meta", type = "OBJECT" }
tags = { path = "tags", type = "ARRAY(TEXT)" }
"""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[columns]\na = { path = "a", type = "INTEGER" }', "unknown type 'INTEGER'"),
        ('[columns]\na = { path = "a..b", type = "TEXT" }', "bad path 'a..b'"),
        ('[columns]\na = { path = "", type = "TEXT" }', "bad path ''"),
        ('[columns]\na = { path = "a", type = "TEXT" }\na = { path = "b", type = "TEXT" }', "not valid TOML"),
        ('[columns]\npk = { path = "a", type = "TEXT" }', "the relay's own columns"),
        ('[columns]\ndata = { path = "a", type = "TEXT" }', "the relay's own columns"),
        ('[columns]\naux = { path = "a", type = "TEXT" }', "the relay's own columns"),
        ('[columns]\ncdc_x = { path = "a", type = "TEXT" }', "the relay's own columns"),
        ('[columns]\na = { path = "x", type = "TEXT" }\nb = { path = "x.y", type = "TEXT" }', "overlapping paths"),
        ('[columns]\na = { path = "x", type = "BIGINT", from = "iso" }', "from applies to TIMESTAMP"),
        ('[columns]\na = { path = "x", type = "TIMESTAMP", from = "days" }', "from = 'days'"),
        ('[columns]\na = { path = "x", type = "ARRAY(ARRAY(TEXT))" }', "ARRAY of ARRAYs"),
        ('[columns]\na = { path = "x", type = "NUMERIC(40, 2)" }', "precision <= 38"),
        ('exclude = ["x"]\n[columns]\na = { path = "x.y", type = "TEXT" }', "is excluded"),
        ("[table]\nshards = 0", "shards = 0"),
        ("[table]\nrefresh-interval = 2.5", "expected whole seconds"),
        ('[columns]\nat = { path = "at", type = "TIMESTAMP" }\n[table]\npartition-by = "at:month"', 'expected "day('),
        ('[columns]\nat = { path = "at", type = "TIMESTAMP" }\n[table]\npartition-by = "year(at)"', 'expected "day('),
        ('[table]\npartition-by = "month(at)"', "no column at in columns"),
        ('[columns]\nat = { path = "at", type = "TEXT" }\n[table]\npartition-by = "month(at)"', "is TEXT from at"),
        ('[columns]\nat = { path = "a.t", type = "TIMESTAMP" }\n[table]\npartition-by = "day(at)"', "a top-level"),
        (
            '[columns]\nat = { path = "at", type = "ARRAY(TIMESTAMP)" }\n[table]\npartition-by = "week(at)"',
            "is ARRAY(TIMESTAMP)",
        ),
        (
            '[columns]\nat = { path = "at", type = "TIMESTAMP" }\nat_month = { path = "x", type = "TEXT" }\n'
            '[table]\npartition-by = "month(at)"',
            "the partition column is named at_month",
        ),
        ("colums = 1", "unknown key 'colums'"),
    ],
)
def test_a_bad_mapping_is_one_line(text: str, says: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, "m.toml")
    message = str(caught.value)
    assert says in message and "\n" not in message and message.startswith("m.toml: ")


def test_the_url_option_checks_the_file_before_anything_starts(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(MAPPING)
    bad.write_text('[columns]\nx = { path = "x", type = "MONEY" }')
    assert parse_source(f"kinesis+dynamodb+cdc://localhost:4566/s?mapping={good}").mapping == str(good)
    with pytest.raises(SourceError, match="unknown type 'MONEY'"):
        parse_source(f"kinesis+dynamodb+cdc://localhost:4566/s?mapping={bad}")
    with pytest.raises(SourceError, match="cannot read the mapping file"):
        parse_source(f"kinesis+dynamodb+cdc://localhost:4566/s?mapping={tmp_path}/missing.toml")


def _value(rng: random.Random) -> Any:
    return rng.choice(
        [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.250Z",
            "2024-05-01T12:00:00.000Z",  # "iso" writes no .000: a misfit, to aux
            "2024-05-01 12:00:00",
            1714564800,
            1714564800250,
            Decimal("12.5"),
            Decimal("1234567890.12"),
            Decimal("0.125"),
            int("9" * 38),
            0.5,
            Decimal("0.1"),
            7,
            "text",
            "nul\x00",
            True,
            None,
            {"k": 1, "l": ["a"]},
            {"k": [[1]]},
            ["a", "b"],
            ["a", 1],
            [],
        ]
    )


def test_every_item_comes_back_exactly_and_each_value_is_in_one_place() -> None:
    mapping = parse_mapping(MAPPING).default
    rng = random.Random(19)
    names = ["at", "atMs", "atS", "score", "count", "name", "ok", "meta", "tags", "other"]
    fitted = misfits = 0
    for _ in range(3000):
        image: dict[str, Any] = {"id": "k"}
        for name in rng.sample(names, rng.randrange(len(names))):
            image[name] = _value(rng)
        if rng.random() < 0.7:
            image["total"] = {"amount": _value(rng), "currency": "EUR"} if rng.random() < 0.8 else _value(rng)
        shaped = shape(mapping, {"id": "k"}, image)
        row = split({"id": "k"}, shaped.rest)
        stored = {**row.pk, **row.data, **row.aux, **shaped.aux}
        assert len(stored) == len(row.pk) + len(row.data) + len(row.aux) + len(shaped.aux)
        assert restore(mapping, stored, shaped.columns) == image
        for column in mapping.columns:  # a column's value is stored in its column only
            if column.name in shaped.columns:
                parent = stored
                for name in column.path[:-1]:
                    parent = parent[name]
                assert column.path[-1] not in parent
        fitted += len(shaped.columns)
        misfits += shaped.misfits
    assert fitted > 1000 and misfits > 1000


def test_values_in_their_columns_types() -> None:
    mapping = parse_mapping(MAPPING).default
    image = {
        "id": "k",
        "at": "2024-05-01T12:00:00.250Z",
        "atS": 1714564800,
        "total": {"amount": Decimal("12.5"), "currency": "EUR"},
        "score": Decimal("0.5"),
        "tags": ["a"],
        "other": 1,
    }
    shaped = shape(mapping, {"id": "k"}, image)
    assert shaped.columns == {
        "at": 1714564800250,
        "at_s": 1714564800000,
        "amount": Decimal("12.5"),
        "score": 0.5,
        "tags": ["a"],
    }
    assert shaped.rest == {"id": "k", "total": {"currency": "EUR"}, "other": 1} and shaped.misfits == 0
    total = {"amount": Decimal("0.125"), "currency": "EUR"}  # a third decimal place: NUMERIC(12, 2) has no room
    odd = shape(mapping, {"id": "k"}, {"id": "k", "total": total})
    assert odd.misfits == 1 and odd.columns == {} and odd.aux == {"total": total}


def test_include_and_exclude_drop_what_is_not_wanted_and_keep_the_key() -> None:
    mapping = parse_mapping('include = ["a", "m.x"]\nexclude = ["a.secret"]').default
    image = {"id": "k", "a": {"v": 1, "secret": 2}, "m": {"x": 1, "y": 2}, "b": 3}
    row = split({"id": "k"}, image, mapping)
    assert {**row.pk, **row.data, **row.aux} == {"id": "k", "a": {"v": 1}, "m": {"x": 1}}


def test_a_stored_mapping_may_gain_columns_but_not_change_or_lose_one(tmp_path: Path) -> None:
    base = parse_mapping('[columns]\na = { path = "a", type = "BIGINT" }').default
    stored = stored_text(base)
    assert from_stored(stored).columns == base.columns
    more = parse_mapping('[columns]\na = { path = "a", type = "BIGINT" }\nb = { path = "b", type = "TEXT" }').default
    assert [column.name for column in added_columns("t", stored, more)] == ["b"]
    for text, says in [
        ('[columns]\na = { path = "a", type = "TEXT" }', "column a of t is BIGINT from a; the mapping makes it TEXT"),
        ('[columns]\nb = { path = "b", type = "TEXT" }', "keep it in the mapping (the relay never drops a column)"),
        ('exclude = ["z"]\n[columns]\na = { path = "a", type = "BIGINT" }', "was filled with exclude"),
    ]:
        with pytest.raises(MappingError) as caught:
            added_columns("t", stored, parse_mapping(text).default)
        assert says in str(caught.value)
    path = tmp_path / "routed.toml"
    path.write_text('[tables.orders.columns]\nn = { path = "n", type = "BIGINT" }\n')
    routed = load_mapping(path)
    assert routed.for_table("orders").columns[0].name == "n" and routed.for_table("other").columns == ()


def test_the_properties_key_and_the_table_url_take_the_mapping_too(tmp_path: Path) -> None:
    from kcl_relay.kcl.properties import spec_from_properties
    from kcl_relay.source.table_url import parse_table

    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(MAPPING)
    bad.write_text('[columns]\nx = { path = "x", type = "MONEY" }')
    base = {"streamName": "s", "applicationName": "app", "regionName": "us-east-1"}
    spec, _, _ = spec_from_properties({**base, "kclrelay.mapping": str(good)})
    assert spec.mapping == str(good)
    with pytest.raises(SourceError, match="unknown type 'MONEY'"):
        spec_from_properties({**base, "kclrelay.mapping": str(bad)})
    table = parse_table(f"dynamodb://localhost:4566/orders?mapping={good}&stream=orders-cdc")
    assert table.mapping == str(good) and table.stream is not None and table.stream.mapping == str(good)


def test_a_bad_mapping_stops_load_table_with_one_line_and_exit_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kcl_relay.cli import cli

    bad = tmp_path / "bad.toml"
    bad.write_text('[columns]\ncdc_at = { path = "at", type = "TIMESTAMP" }\n')
    target = f"sqlite:///{tmp_path}/never.db"
    for url in (f"kinesis+dynamodb+cdc://localhost:1/s?mapping={bad}", f"dynamodb://localhost:1/t?mapping={bad}"):
        result = CliRunner().invoke(cli, ["load", "table", url, "--target", target])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert "the names pk, data, aux and cdc_* are the relay's own columns" in line
    assert not (tmp_path / "never.db").exists()  # nothing started


PARTITIONED = """
[columns]
placed = { path = "sk", type = "TIMESTAMP", from = "epoch-ms" }
qty = { path = "qty", type = "BIGINT" }
[table]
partition-by = "month(placed)"
"""


def test_partition_by_takes_its_column_out_of_the_shaped_ones_and_is_kept_beside_the_table() -> None:
    mapping = parse_mapping(PARTITIONED).default
    assert mapping.partition is not None and mapping.partition.name == "placed_month"
    assert [column.name for column in mapping.columns] == ["qty"]  # generated from pk: never written by the relay
    mapping.check_key({"id": "S", "sk": "N"})
    assert from_stored(stored_text(mapping)) == mapping.__class__(columns=mapping.columns, partition=mapping.partition)
    plain = parse_mapping(PARTITIONED.replace('partition-by = "month(placed)"', "")).default
    with pytest.raises(MappingError, match="partitioning is fixed at create"):
        added_columns("t", stored_text(mapping), plain)
    with pytest.raises(MappingError, match="partitioning is fixed at create"):
        added_columns("t", stored_text(plain), mapping)


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ({"id": "S"}, "placed maps sk, not a key attribute (id); CrateDB puts the partition column in the primary key"),
        ({"id": "S", "sk": "S"}, "the key attribute sk is of type S; from = 'epoch-ms' reads numbers (N)"),
    ],
)
def test_partition_by_refuses_anything_but_a_key_timestamp(keys: dict[str, Any], says: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(PARTITIONED).default.check_key(keys)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_ddl_refuses_partition_by_of_a_non_key_attribute_with_one_line_and_exit_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kcl_relay.cli import cli

    bad = tmp_path / "bad.toml"
    bad.write_text(PARTITIONED)
    url = f"kinesis+dynamodb+cdc://localhost:1/s?mapping={bad}"
    target = "crate://localhost:1/doc"
    result = CliRunner().invoke(cli, ["ddl", url, "--target", target, "--table", "t", "--key", "id:S"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "partition-by month(placed): placed maps sk, not a key attribute" in line
    good = CliRunner().invoke(cli, ["ddl", url, "--target", target, "--table", "t", "--key", "id:S", "--key", "sk:N"])
    assert good.exit_code == 0, good.output
    assert (
        '"placed" TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS CAST(pk[\'sk\'] AS BIGINT), "placed_month" TIMESTAMP '
        "WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', CAST(pk['sk'] AS BIGINT)) PRIMARY KEY) "
        'PARTITIONED BY ("placed_month")' in good.output
    )


def test_the_documented_time_series_mapping_partitions_by_the_range_key() -> None:
    from kcl_relay.sink.admin import create_statements
    from kcl_relay.sink.cratedb import CrateDBDialect

    mapping = load_mapping(Path(__file__).parents[2] / "docs" / "mappings" / "timeseries.toml").default
    keys: dict[str, Any] = {"sensor": "S", "ts": "N"}
    mapping.check_key(keys)
    target = create_statements(CrateDBDialect("doc", "readings"), keys, mapping)[0]
    assert target.endswith(
        "\"at_month\" TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', CAST(pk['ts'] AS BIGINT)) "
        'PRIMARY KEY) PARTITIONED BY ("at_month") CLUSTERED INTO 6 SHARDS WITH (refresh_interval = 10000)'
    )
    upsert = CrateDBDialect("doc", "readings").upsert_sql(sorted(keys), partition="at_month")
    assert "ON CONFLICT (pk['sensor'], pk['ts'], \"at_month\") DO UPDATE SET" in upsert and "at_month =" not in upsert
