"""The generated test's own parts: strategies stay within DynamoDB's limits, the comparison is strict."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings

from tests.support import dynamo_items as gen


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(gen.scenarios())
def test_scenarios_are_valid_dynamodb_streams(scenario: gen.Scenario) -> None:
    present: set[tuple[object, ...]] = set()
    for event in scenario.events:
        identity = gen.key_identity(scenario.schema, event.key)
        assert set(event.key) == set(scenario.schema.types)
        for name, key_type in scenario.schema.types.items():
            inner = event.key[name][key_type]
            limit = gen.HASH_KEY_BYTES if name == scenario.schema.hash_name else gen.RANGE_KEY_BYTES
            if key_type == "S":
                assert 1 <= len(inner.encode("utf-8")) <= limit
        if event.op == "INSERT":
            assert identity not in present
        else:
            assert identity in present
        if event.new is not None:
            assert gen.item_size(event.new) <= gen.MAX_ITEM_BYTES
            assert all(gen.nesting(value) <= gen.MAX_NESTING for value in event.new.values())
            assert all(1 <= len(name) <= gen.MAX_NAME_CHARS for name in event.new)
            present.add(identity)
        else:
            present.discard(identity)
    assert 1 <= scenario.batch_size <= 10_000


def test_differences_are_strict() -> None:
    differ = lambda want, got, text=False: list(gen.differences(want, got, numbers_as_text=text))  # noqa: E731
    assert differ(Decimal("1"), True)  # BOOL true is not the number 1
    assert differ(True, 1)
    assert differ(Decimal("0.1"), 0.1)  # a float is never an exact number here
    assert not differ(Decimal("1.50"), Decimal("1.5"))
    assert not differ(Decimal("-0"), 0)
    assert differ("1", Decimal("1"))
    big = Decimal("12345678901234567890123456789012345678")
    assert differ(big, str(big))  # text only where the target documents it (CrateDB) ...
    assert not differ(big, str(big), True)
    assert differ(Decimal("5"), "5", True)  # ... and only for numbers no 64-bit integer or double holds
    assert differ({"a": None}, {})
    assert differ({"a": [1]}, {"a": [1], "b": 2})
    members = gen.plain({"SS": ["b", "a"]})
    assert not differ(members, ["a", "b"])
    assert differ(members, ["b", "a"])  # sets come back sorted
    assert differ(members, ["a", "b", "b"])
    assert not differ(gen.plain({"NS": ["10", "9", "1E-130"]}), [Decimal("1E-130"), 9, 10])
    assert differ(gen.plain({"NS": ["10", "9"]}), [10, 9])


def test_reference_model_is_dynamodbs_last_image_per_key() -> None:
    schema = gen.KeySchema("id", "N")
    one, minus_zero = {"id": {"N": "0"}}, {"id": {"N": "-0"}}
    scenario = gen.fixed(
        schema,
        [
            ("INSERT", {**one, "v": {"S": "a"}}),
            ("MODIFY", {**minus_zero, "v": {"S": "b"}}),  # -0 is 0: the same item
            ("INSERT", {"id": {"N": "1E+2"}, "v": {"BOOL": True}}),
            ("REMOVE", {"id": {"N": "100.00"}}),
        ],
        batch_size=1,
    )
    assert gen.final_state(schema, scenario.events) == {(Decimal(0),): {"id": Decimal(0), "v": "b"}}
