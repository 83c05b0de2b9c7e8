"""The fault scenarios' accounting (tests/support/faults.py): what their reports count is computed from the data."""

from __future__ import annotations

from kcl_relay.cdc.event import canonical_key
from tests.support.faults import account_restarts, applied_flushes, compare


def test_lost_counts_missing_and_differing_items_extra_apart() -> None:
    a, b, c, d = (canonical_key({"id": n}) for n in ("a", "b", "c", "d"))
    expected = {a: {"id": "a", "n": 1}, b: {"id": "b", "n": 2}, c: {"id": "c", "n": 3}}
    got = {a: {"id": "a", "n": 1}, b: {"id": "b", "n": 20}, d: {"id": "d", "n": 4}}
    sync = compare(expected, got)
    assert (sync.lost, sync.missing, sync.differing, sync.extra) == (2, [c], [b], [d])
    assert not sync.exact
    assert "1 missing" in sync.summary() and "1 extra" in sync.summary()
    assert compare(expected, dict(expected)).lost == 0 and compare(expected, dict(expected)).exact


def test_applied_flushes_reads_each_flush_of_the_processor_log() -> None:
    log = (
        "shard shardId-1: 5 records -> 5 upserts, 0 deletes, 0 stale, 0 ttl ignored, 0 dead letters\n"
        "shard shardId-1: resuming after checkpoint 7\n"
        "shard shardId-2: 3 records -> 2 upserts, 1 deletes, 0 stale, 0 ttl ignored, 0 dead letters\n"
        "shard shardId-1: 2 records -> 2 upserts, 0 deletes, 0 stale, 0 ttl ignored, 0 dead letters\n"
    )
    assert applied_flushes(log) == {"shardId-1": [5, 2], "shardId-2": [3]}


def test_a_crash_redelivers_what_its_last_flushes_left_unacknowledged() -> None:
    # shard s: 20 records. Run 1 applies 0..9 and checkpoints them; run 2 applies 10..17 in flushes of 3, 3, 2 and
    # checkpoints the first two (at 16 records): the crash leaves 16..17 to run 3, which applies 16..19.
    account = account_restarts({"s": 20}, {"s": 10}, {"s": 16}, [[{"s": [10]}], [{"s": [3, 3, 2]}, {}], [{"s": [4]}]])
    assert (account.graceful_redelivered, account.crash_redelivered, account.crash_bound) == (0, 2, 2)
    assert (account.undelivered, account.applied, account.records) == (0, 22, 20)


def test_records_no_run_applied_are_counted() -> None:
    # run 3 stopped two records short of the end, and run 2's checkpoint claims a record it never applied
    account = account_restarts({"s": 20}, {"s": 10}, {"s": 16}, [[{"s": [10]}], [{"s": [5]}], [{"s": [2]}]])
    assert account.undelivered == 1 + 2
    assert account.crash_redelivered == -1  # a checkpoint ahead of the commits: the test's bound fails on it
