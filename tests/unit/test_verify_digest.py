"""What verify compares, without a database: comparable items, digests, stored forms per dialect, the report."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from kcl_relay.cdc.event import SNAPSHOT_SHARD, ChangeEvent, Position
from kcl_relay.cdc.jsonenc import loads
from kcl_relay.sink.reader import TargetReader, comparable, digest
from kcl_relay.sink.target import parse_target
from kcl_relay.verify import Report, _classify, _Digests

ITEM = {
    "id": 7,
    "small": 2,
    "half": Decimal("0.5"),
    "tenth": Decimal("0.1"),
    "pi": Decimal("3.14159265358979323846264338327"),  # no double holds it
    "big": 12345678901234567890123456789012345678,  # beyond 64 bits
    "text": "ünï",
    "flag": True,
    "none": None,
    "doc": {"n": 1, "d": Decimal("-2.75"), "l": [1, "two", None]},
    "set": [Decimal("1.5"), 3],
    "_odd name": "kept in aux",
}


def event(image: dict[str, Any], version: int = 1) -> ChangeEvent:
    return ChangeEvent("INSERT", "t", {"id": image["id"]}, {"id": "N"}, image, version, Position(SNAPSHOT_SHARD, "1"))


def test_comparable_numbers_compare_by_value() -> None:
    assert comparable(2.0) == comparable(2) == comparable(Decimal("2.00")) == 2
    assert comparable(0.1) == comparable(Decimal("0.1")) == Decimal("0.1")
    assert comparable({"a": [1.0, {"b": 2.5}]}) == {"a": [1, {"b": Decimal("2.5")}]}
    assert comparable(True) is True and comparable("1") == "1"


def test_digest_ignores_key_order_but_not_values() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": [1, 2]}) != digest({"a": [2, 1]})
    assert digest({"a": 1}) != digest({"a": "1"})
    assert digest({"a": 1}) != digest({"a": 1, "b": None})
    assert len(digest({"a": "\ud800"})) == 16  # a lone surrogate (DynamoDB allows none, but a row might)


@pytest.mark.parametrize(
    "url", ["sqlite:////tmp/x.db", "postgresql://u@localhost/db", "crate://crate@localhost:4200/doc/t"]
)
def test_the_stored_form_of_an_item_is_the_item_itself_up_to_number_forms(url: str) -> None:
    reader = TargetReader(parse_target(url, "t"), {"id": "N"}, look_up_mapping=False)  # no server here
    try:
        stored = reader.stored_item(event(ITEM))
    finally:
        reader.close()
    # CrateDB holds doubles where a double is exact, else marked decimal text in aux, which reads back as the number.
    assert stored == comparable(ITEM)


def test_crate_rows_read_back_through_the_driver_match_the_stored_form() -> None:
    """The crate driver hands JSON back: numbers as int or float. Their digest equals the stored form's."""
    reader = TargetReader(parse_target("crate://crate@localhost:4200/doc/t", "t"), {"id": "N"}, look_up_mapping=False)
    try:
        stored = reader.stored_item(event(ITEM))
        _pk, data, aux = reader.dialect.upsert_params(event(ITEM), _split(ITEM))[:3]
        from_driver = json.loads(json.dumps({"data": data, "aux": aux}))  # what comes back over HTTP
        row = reader._row(({"id": "7"}, from_driver["data"], from_driver["aux"], 1))
    finally:
        reader.close()
    assert row.key_id == '{"id":7}'
    assert digest(row.item) == digest(stored)


def test_json_rows_read_back_match_the_stored_form() -> None:
    reader = TargetReader(parse_target("sqlite:////tmp/x.db", "t"), {"id": "N"}, look_up_mapping=False)
    try:
        pk, data, aux = reader.dialect.upsert_params(event(ITEM), _split(ITEM))[:3]
        row = reader._row((pk, data, aux, 5))
        assert (row.key, row.version) == ({"id": 7}, 5)
        assert digest(row.item) == digest(reader.stored_item(event(ITEM)))
        changed = reader._row((pk, data.replace('"ünï"', '"uni"'), aux, 5))
        assert digest(changed.item) != digest(reader.stored_item(event(ITEM)))
    finally:
        reader.close()


def _split(item: dict[str, Any]) -> Any:
    from kcl_relay.cdc.layout import split

    return split({"id": item["id"]}, item)


def test_classify() -> None:
    report = Report("full", 0, 0, 0)
    source = {"a": b"1", "b": b"2", "c": b"3"}
    target = {"b": b"2", "c": b"x", "d": b"4"}
    _classify(["a", "b", "c", "d", "e"], source, target, report)
    assert (report.missing, report.extra, report.differing) == (["a"], ["d"], ["c"])


def test_report_lines_and_json() -> None:
    report = Report(
        "full",
        dynamodb_items=3,
        target_rows=3,
        estimate=3,
        missing=['{"id":2}', '{"id":1}'],
        extra=['{"id":9}'],
        differing=[],
    )
    lines = report.lines("orders", "sqlite table t", show=1)
    assert lines == [
        "DynamoDB table orders: 3 items",
        "target sqlite table t: 3 rows",
        'missing in the target: 2: {"id":1}, ...',
        'extra in the target: 1: {"id":9}',
        "drift: 3 keys",
    ]
    summary = loads(report.to_json(show=5))
    assert summary["in_sync"] is False and summary["missing"] == 2
    assert summary["first_missing"] == [{"id": 1}, {"id": 2}]
    assert Report("sampled", 10, 100, 1000, checked_rows=10).lines("o", "t", 5) == [
        "DynamoDB table o: 10 items sampled (about 1000 in all)",
        "target t: 10 of 100 rows sampled",
        "in sync",
    ]


def test_digests_live_on_disk_and_come_back_by_key_and_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DynamoDB side of a full verify: on disk, taken by key (what is left is missing), listed in chunks."""
    import os
    import tracemalloc

    monkeypatch.setattr(_Digests, "CHUNK", 7)
    odd = ["a'b", 'q"d', "back\\slash", "🔑", "\ue000", "\uffff", "lone \udc80 surrogate", ""]
    digests = _Digests()
    path = digests._dir.name
    try:
        digests.add({json.dumps({"id": key}): digest({"v": key}) for key in odd}, ["bad"])
        digests.add({json.dumps({"id": n}): digest({"v": n}) for n in range(30)}, [])
        digests.add({json.dumps({"id": 0}): digest({"v": 0})}, [])  # read twice (a retried page): once
        assert len(digests) == len(odd) + 30 and digests.undecodable == ["bad"]
        assert json.dumps({"id": "🔑"}) in digests and json.dumps({"id": "absent"}) not in digests
        taken = digests.take([json.dumps({"id": key}) for key in [*odd, "absent"]])
        assert taken == {json.dumps({"id": key}): digest({"v": key}) for key in odd}
        assert digests.take([json.dumps({"id": odd[0]})]) == {}, "taken once"
        chunks = list(digests.pages())
        assert max(len(chunk) for chunk in chunks) == 7
        left = {key: value for chunk in chunks for key, value in chunk.items()}
        assert left == {json.dumps({"id": n}): digest({"v": n}) for n in range(30)}

        tracemalloc.start()  # Python's heap does not grow with the digests (SQLite's page cache is capped apart)
        try:
            for start in range(0, 50_000, 1000):
                digests.add({json.dumps({"id": f"key {n}"}): digest({"v": n}) for n in range(start, start + 1000)}, [])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(digests) == len(odd) + 30 + 50_000  # items read, taken or not
        assert peak < 2_000_000, f"{peak} bytes for 50,000 digests"
    finally:
        digests.close()
    assert not os.path.exists(path)
