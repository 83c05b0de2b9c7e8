"""The tie-breaker on an equal ApproximateCreationDateTime: stream order that holds across a shard lineage."""

from __future__ import annotations

from kcl_relay.cdc.event import SNAPSHOT_SHARD, Position, lineage_rank


def test_a_child_shard_record_wins_a_tie_against_its_parents_record_whatever_the_sequence_numbers() -> None:
    # Sequence numbers of two shards are not ordered: the parent's may well be the greater one.
    parent = Position("shardId-000000000000", "49590338271490256608559692538361571095921575989136588898")
    child = Position("shardId-000000000002", "49590338271490256608559692538361571095921575989136588897")
    assert child.order_token > parent.order_token


def test_within_a_shard_sequence_numbers_order_numerically() -> None:
    assert Position("shardId-000000000001", "900").order_token > Position("shardId-000000000001", "12").order_token
    later = Position("shardId-000000000001", "12", sub_sequence_number=3)
    assert later.order_token > Position("shardId-000000000001", "12", 2).order_token


def test_ranks() -> None:
    assert lineage_rank("shardId-000000000000") == 1
    assert lineage_rank("shardId-000000000041") == 42
    assert lineage_rank("file:changes.ndjson") == 0  # no stream position
    assert lineage_rank("shardId-x") == 0
    assert lineage_rank(SNAPSHOT_SHARD) > lineage_rank("shardId-999999999998")


def test_a_snapshot_item_wins_a_tie_against_every_stream_record() -> None:
    snapshot = Position(SNAPSHOT_SHARD, "0")
    assert snapshot.order_token > Position("shardId-999999999998", "9" * 56).order_token


# DynamoDB Streams names shards shardId-<creation time in epoch ms, 20 digits>-<8 hex>; a child is created when its
# parent closes, so it ranks above it. Same second (ApproximateCreationDateTime has one-second precision): the tie
# falls to the token, and a child's record must win whatever the two shards' sequence numbers are.
DDB_PARENT = "shardId-00000001764640000000-1a2b3c4d"
DDB_CHILD = "shardId-00000001764654400000-0f0e0d0c"


def test_a_dynamodb_streams_child_shard_record_wins_a_tie_against_its_parents_record() -> None:
    parent = Position(DDB_PARENT, "4000000000000000000099999")
    child = Position(DDB_CHILD, "300000000000000000001")  # smaller, and shorter
    assert child.order_token > parent.order_token
    assert lineage_rank(DDB_CHILD) > lineage_rank(DDB_PARENT) > 0


def test_dynamodb_streams_ranks_stay_below_the_snapshot_and_odd_ids_rank_zero() -> None:
    assert lineage_rank(SNAPSHOT_SHARD) > lineage_rank("shardId-09999999999999999997-ffffffff")
    assert lineage_rank("shardId-99999999999999999999-ffffffff") == 0  # past the snapshot rank: no lineage
    assert lineage_rank("shardId-0000000176464000000-1a2b3c4d") == 0  # 19 digits: not the DynamoDB Streams form
    assert lineage_rank("shardId-00000001764640000000") == 0
