import json
import random
from decimal import Decimal
from itertools import pairwise

from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import ChangeEvent, Position, RawRecord
from tests.support.corpus import make_corpus
from tests.support.reference import reference_state


def event(key: str, version: int, seq: int, op: str = "MODIFY", shard: str = "shard-0") -> ChangeEvent:
    image = None if op == "REMOVE" else {"id": key, "v": version, "seq": seq}
    return ChangeEvent(
        op=op,  # type: ignore[arg-type]
        table_name="t",
        key={"id": key},
        key_types={"id": "S"},
        image=image,
        version=version,
        position=Position(shard, str(seq)),
    )


def test_empty() -> None:
    assert coalesce([]) == []


def test_one_event_per_key_newest_version_wins() -> None:
    events = [event("a", 10, 1), event("b", 5, 2), event("a", 30, 3), event("a", 20, 4), event("b", 4, 5)]
    result = coalesce(events)
    assert [(e.key["id"], e.version) for e in result] == [("a", 30), ("b", 5)]


def test_equal_version_later_position_wins() -> None:
    # Sequence numbers compare as numbers: 10 is after 9 although "10" < "9" as text.
    result = coalesce([event("a", 7, 10), event("a", 7, 9)])
    assert result[0].position.sequence_number == "10"


def test_exact_tie_later_in_input_wins() -> None:
    first, second = event("a", 7, 3), event("a", 7, 3, op="REMOVE")
    assert coalesce([first, second]) == [second]
    assert coalesce([second, first]) == [first]


def test_remove_is_kept_as_the_newest_event() -> None:
    result = coalesce([event("a", 1, 1), event("a", 2, 2, op="REMOVE"), event("a", 1, 3)])
    assert len(result) == 1 and result[0].op == "REMOVE"


def test_output_order_is_first_appearance() -> None:
    events = [event("c", 1, 1), event("a", 1, 2), event("b", 1, 3), event("a", 9, 4), event("c", 0, 5)]
    assert [e.key["id"] for e in coalesce(events)] == ["c", "a", "b"]


def test_keys_compare_canonically() -> None:
    one = ChangeEvent("MODIFY", "t", {"n": Decimal("1.50")}, {"n": "N"}, {"n": 1}, 1, Position("s", "1"))
    two = ChangeEvent("MODIFY", "t", {"n": Decimal("1.5")}, {"n": "N"}, {"n": 2}, 2, Position("s", "2"))
    assert coalesce([one, two]) == [two]


def test_result_independent_of_delivery_order() -> None:
    rng = random.Random(3)
    events = [event(f"k{rng.randrange(20)}", rng.randrange(50), seq) for seq in range(1, 400)]
    expected = {e.key_id: e for e in coalesce(events)}
    for _ in range(20):
        rng.shuffle(events)
        assert {e.key_id: e for e in coalesce(events)} == expected


def test_coalesced_batches_reach_the_reference_state() -> None:
    records = make_corpus(3000, seed=11)
    events = [
        decode(RawRecord(json.dumps(r).encode(), Position("file:corpus", str(i)))) for i, r in enumerate(records, 1)
    ]
    # Apply batch by batch with the relay's rule (a row is replaced only by a newer event).
    table: dict[str, ChangeEvent] = {}
    for start in range(0, len(events), 128):
        for newest in coalesce(events[start : start + 128]):
            current = table.get(newest.key_id)
            if current is None or newest.order >= current.order:
                table[newest.key_id] = newest
    state = {key_id: e.image for key_id, e in table.items() if e.op != "REMOVE"}
    assert state == reference_state(events)
    assert len(state) > 50  # the corpus leaves a real table behind


def test_reference_state_ignores_late_older_writes() -> None:
    events = [event("a", 1, 1), event("a", 5, 2, op="REMOVE"), event("a", 3, 3), event("b", 2, 4)]
    assert reference_state(events) == {'{"id":"b"}': {"id": "b", "v": 2, "seq": 4}}
    assert reference_state(reversed(events)) == reference_state(events)


def test_corpus_contains_the_faults_it_promises() -> None:
    records = make_corpus(3000, seed=2)
    assert make_corpus(3000, seed=2) == records  # reproducible
    assert len(records) == 3000
    events = [
        decode(RawRecord(json.dumps(r).encode(), Position("file:corpus", str(i)))) for i, r in enumerate(records, 1)
    ]
    assert 100 <= len({e.key_id for e in events}) <= 300
    assert {tuple(sorted(e.key_types.items())) for e in events} == {(("id", "N"), ("tenant", "S"))}
    assert any(len(str(e.key["id"]).lstrip("-")) == 38 for e in events)
    ids = [r["eventID"] for r in records]
    assert len(set(ids)) < len(ids)  # redelivered duplicates
    assert any(later.version < earlier.version for earlier, later in pairwise(events))  # out of order
    assert any(e.is_ttl_expiry for e in events) and any(e.op == "REMOVE" and not e.is_ttl_expiry for e in events)
    removed_at: dict[str, int] = {}
    late_stale = 0
    for e in events:
        if e.op == "REMOVE":
            removed_at[e.key_id] = max(removed_at.get(e.key_id, 0), e.version)
        elif e.version < removed_at.get(e.key_id, -1):
            late_stale += 1  # an older write arriving after the REMOVE that superseded it
    assert late_stale > 0
