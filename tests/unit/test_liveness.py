"""Is a lease's owner alive (kcl_relay.kcl.liveness), and what `status` makes of it: holders, gone owners, shards that
wait for a new owner."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kcl_relay.kcl.leases import LeaseTables, prepare_leases
from kcl_relay.kcl.liveness import ALIVE, GONE, Timing, judge, metrics_ages, renewing
from kcl_relay.kcl.report import Heading, ShardReport, collect, judge_owners, render_json, render_text, summary

# The relay's default: failover-time 10 s, worker metrics every 5 s (properties.worker_metrics_report_millis).
TIMING = Timing(report_millis=5000, failover_millis=10_000)
NOW = 1_800_000_000.0


def metric(wid: str, age: float, millis: bool = False) -> dict[str, Any]:
    lut = NOW - age
    return {"wid": {"S": wid}, "lut": {"N": str(int(lut * 1000) if millis else int(lut))}}


def test_timing_follows_the_kcl() -> None:
    assert TIMING.active_seconds == 11.0  # two reports, and a second for lut's whole seconds
    assert TIMING.renewal_seconds == pytest.approx(3.3083, abs=1e-3)  # failover / 3 - 25 ms


def test_metrics_ages_in_seconds_or_millis() -> None:
    items = [metric("a", 3), metric("b", 40, millis=True), {"wid": {"S": "no-lut"}}, {"lut": {"N": "1"}}]
    assert metrics_ages(items, NOW) == {"a": 3.0, "b": pytest.approx(40.0, abs=0.01)}
    assert metrics_ages([metric("ahead", -2)], NOW) == {"ahead": 0.0}  # a clock a little ahead is not negative


def test_a_stale_metrics_entry_is_gone_the_rest_is_watched() -> None:
    ages = {"fresh": 1.0, "edge": 11.0, "stale": 11.5}
    verdicts = judge(["fresh", "edge", "stale", "silent"], ages, TIMING)
    assert verdicts == {"fresh": None, "edge": None, "stale": GONE, "silent": None}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def test_renewing_watches_counters_until_the_failover_time() -> None:
    clock = Clock()
    reads = iter(
        [
            {"s1": ("moving", 5), "s2": ("still", 9), "s3": ("taken", 2)},
            {"s1": ("moving", 6), "s2": ("still", 9), "s3": ("other", 3)},
        ]
    )
    last: dict[str, tuple[str | None, int | None]] = {}

    def counters() -> dict[str, tuple[str | None, int | None]]:
        nonlocal last
        last = next(reads, last)
        return last

    verdicts = renewing(counters, {"moving", "still", "taken"}, TIMING, sleep=clock.sleep, clock=clock)
    assert verdicts == {"moving": ALIVE, "still": GONE, "taken": GONE}
    assert clock.now == pytest.approx(TIMING.failover_millis / 1000)  # "still" needed the whole failover time


def test_renewing_stops_once_every_owner_is_judged() -> None:
    clock = Clock()
    reads = iter([{"s1": ("w", 1)}, {"s1": ("w", 2)}])
    verdicts = renewing(lambda: next(reads), {"w"}, TIMING, sleep=clock.sleep, clock=clock)
    assert verdicts == {"w": ALIVE} and clock.now < TIMING.renewal_seconds


def test_renewing_from_an_earlier_reading_looks_once_at_least() -> None:
    """The first reading is the one status made before the lag calls: the watch counts from then on."""
    clock = Clock()
    clock.now = 100.0
    reads: list[int] = []

    def counters() -> dict[str, tuple[str | None, int | None]]:
        reads.append(1)
        return {"s1": ("w", 3), "s2": ("v", 8)}

    first = {"s1": ("w", 2), "s2": ("v", 8)}
    verdicts = renewing(counters, {"w", "v"}, TIMING, first, started=50.0, sleep=clock.sleep, clock=clock)
    assert verdicts == {"w": ALIVE, "v": GONE} and len(reads) == 1 and clock.now == 100.0


def reports() -> list[ShardReport]:
    return [
        ShardReport("s0", leased=True, owner="w1", checkpoint="1", millis_behind=0),
        ShardReport("s1", leased=True, owner="w2", checkpoint="2", millis_behind=0),
        ShardReport("s2", leased=True, owner="w2", checkpoint="3", millis_behind=0),
        ShardReport("s3", leased=True, checkpoint="TRIM_HORIZON", millis_behind=0),
        ShardReport("s4", closed=True, leased=True, owner="w3", checkpoint="SHARD_END"),
    ]


def test_a_gone_owner_holds_nothing_and_its_shards_wait() -> None:
    shards = reports()
    reads = iter([{"s0": ("w1", 4), "s1": ("w2", 8)}, {"s0": ("w1", 5), "s1": ("w2", 8)}])
    judge_owners(shards, [metric("w1", 2), metric("w2", 60)], TIMING, lambda: next(reads), now=NOW)
    assert [(s.owner_state, s.holder, s.waiting) for s in shards] == [
        (ALIVE, "w1", False),
        (GONE, None, True),
        (GONE, None, True),
        (None, None, True),  # no owner: waits too
        (None, "w3", False),  # finished: not judged, waits for nothing
    ]
    assert summary(shards) == (
        "5 shards (4 open), 5 leases, 2 workers holding leases; 3 waiting for a new owner (w2 gone); "
        "every shard caught up"
    )
    lines = render_text(Heading("a", "a", "s", "here"), shards).splitlines()
    assert [line.split()[1:4] for line in lines[4:8]] == [
        ["w1", "1", "no"],
        ["w2", "(gone,", "waiting)"],
        ["w2", "(gone,", "waiting)"],
        ["(waiting)", "TRIM_HORIZON", "no"],
    ]
    document = json.loads(render_json(Heading("a", "a", "s", "here"), shards))
    first, second = document["shards"][:2]
    assert (first["owner_alive"], first["owner_last_report_seconds"], first["waiting_for_owner"]) == (True, 2.0, False)
    assert (second["owner"], second["owner_alive"], second["waiting_for_owner"]) == ("w2", False, True)


def test_a_fresh_metrics_entry_without_renewals_is_a_stopped_worker() -> None:
    """A worker stopped a moment ago (its entry still fresh, its leases kept) is gone once its counters stood still
    for the failover time; an owner without any metrics entry whose counter moves is alive."""
    shards = reports()[:2]
    reads = iter([{"s0": ("w1", 4), "s1": ("w2", 8)}, {"s0": ("w1", 4), "s1": ("w2", 9)}])
    timing = Timing(report_millis=1000, failover_millis=300)  # a short watch for the test: 0.3 s at most
    judge_owners(shards, [metric("w1", 1)], timing, lambda: next(reads, {"s0": ("w1", 4), "s1": ("w2", 9)}), NOW)
    assert [s.owner_state for s in shards] == [GONE, ALIVE]


class Renewer(threading.Thread):
    """Bumps one lease's counter every 50 ms, as its owner's DynamoDBLeaseRenewer does."""

    def __init__(self, dynamodb: Any, table: str, key: str) -> None:
        super().__init__(daemon=True)
        self.dynamodb, self.table, self.key, self.halt = dynamodb, table, key, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"leaseKey": {"S": self.key}},
                UpdateExpression="ADD leaseCounter :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    def __enter__(self) -> Renewer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()


def test_collect_judges_owners_from_the_worker_metrics_table() -> None:
    with mock_aws():
        session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
        kinesis, dynamodb = session.client("kinesis"), session.client("dynamodb")
        kinesis.create_stream(StreamName="s", ShardCount=2)
        tables = LeaseTables.of({"applicationName": "app"})
        prepare_leases(dynamodb, kinesis, tables, "s", "TRIM_HORIZON")
        first, second = sorted(item["leaseKey"]["S"] for item in dynamodb.scan(TableName="app")["Items"])
        for shard_id, owner in ((first, "alive-1"), (second, "dead-1")):
            dynamodb.update_item(
                TableName="app",
                Key={"leaseKey": {"S": shard_id}},
                UpdateExpression="SET leaseOwner = :o",
                ExpressionAttributeValues={":o": {"S": owner}},
            )
        now = time.time()
        dynamodb.put_item(TableName=tables.worker_metrics, Item={"wid": {"S": "alive-1"}, "lut": {"N": str(int(now))}})
        dynamodb.put_item(
            TableName=tables.worker_metrics, Item={"wid": {"S": "dead-1"}, "lut": {"N": str(int(now) - 99)}}
        )
        quick = Timing(report_millis=1000, failover_millis=2000)
        with Renewer(dynamodb, "app", first):  # alive-1's KCL, bumping its lease's counter
            got = collect(kinesis, dynamodb, "s", "app", metrics_table=tables.worker_metrics, timing=quick)
        assert [(r.owner, r.owner_state, r.waiting) for r in got] == [("alive-1", ALIVE, False), ("dead-1", GONE, True)]
        # no metrics table at all (a daemon that writes none): counters decide, here after a short watch
        dynamodb.delete_table(TableName=tables.worker_metrics)
        quick = Timing(report_millis=1000, failover_millis=300)
        got = collect(kinesis, dynamodb, "s", "app", metrics_table=tables.worker_metrics, timing=quick)
        assert [r.owner_state for r in got] == [GONE, GONE]  # nobody bumps these counters


def test_status_takes_the_workers_timing_from_their_properties_else_the_relays() -> None:
    from kcl_relay.kcl.report import timing_of
    from kcl_relay.source.url import parse_source

    spec = parse_source("kinesis+dynamodb+cdc://aws/s?failover-time=6")
    assert timing_of(spec, {}) == Timing(report_millis=3000, failover_millis=6000)  # as the relay runs its workers
    assert timing_of(spec, {"failoverTimeMillis": "20000"}) == Timing(report_millis=10_000, failover_millis=20_000)
    custom = {"failoverTimeMillis": "20000", "workerMetricsReporterFreqInMillis": "30000"}
    assert timing_of(spec, custom) == Timing(report_millis=30_000, failover_millis=20_000)
