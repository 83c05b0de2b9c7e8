"""Fault scenarios through real workers: separate `kcl-relay load table` processes (the KCL through kcl-relay's
launcher, and our processors) on the emulators, item writes going on in the DynamoDB emulator (pumped into the
Kinesis stream as "Kinesis Data Streams for DynamoDB" would), and a Scan of the DynamoDB table as the oracle: at the
end the target equals it exactly (nothing lost, nothing extra, nothing stale).

| scenario | test |
| --- | --- |
| a. three workers share a 4-shard stream | test_a_fleet_shares_hands_over_and_takes_over |
| f. SIGTERM of one of three: graceful hand-over | test_a_fleet_shares_hands_over_and_takes_over |
| b. SIGKILL of one worker: take-over after failover-time | test_a_fleet_shares_hands_over_and_takes_over |
| b. SIGKILL of the KCL leader: take-over as fast | test_b_a_crashed_leader_costs_what_any_crash_does |
| c. every worker restarted (gracefully, then crashed) | test_every_worker_restarted_resumes_from_checkpoints |
| d. database outage | tests/e2e/test_outage_e2e.py |
| e. poison records in a live stream | test_poison_records_are_dead_lettered_with_their_reason |

The short form runs in CI; KCL_RELAY_FAULTS_LONG=1 runs the long form (more keys, longer writes, the default
failover time), and KCL_RELAY_FAULTS_REPORT=FILE.json records the measured figures (benchmarks/faults.py does both
and writes benchmarks/results/faults.md). docs/faults.md has the table with the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kcl_relay.kcl.leases import LeaseTables, prepare_leases
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from tests.support.e2e import app_name, source_url, wait_for
from tests.support.faults import (
    KEY_SCHEMA,
    LONG,
    Sync,
    Worker,
    Writers,
    account_restarts,
    leader,
    leases,
    owners,
    report,
    wait_in_sync,
)
from tests.support.tables import relation

pytestmark = pytest.mark.timeout(1200 if LONG else 400)

TABLE, STREAM = "orders", "orders-cdc"
FAILOVER = 10.0 if LONG else 6.0  # failover-time (s): the relay's default in the long form
N_KEYS = 2000 if LONG else 150
WRITE_PAUSE = 0.005 if LONG else 0.02  # between item writes
SETTLE = 20.0 if LONG else 4.0  # writes going on between two faults


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """Whatever a test did, none of its workers outlives it."""
    yield
    Worker.crash_all()


def fresh_source(aws: LocalAws, shards: int) -> None:
    create_table(aws.client("dynamodb"), TABLE, KEY_SCHEMA)
    create_stream(aws.client("kinesis"), STREAM, shards=shards)


def failover_source(aws: LocalAws, shards: int) -> tuple[str, str]:
    """A fresh source of `shards` shards and a new application to read it with FAILOVER: (app, source URL)."""
    fresh_source(aws, shards)
    app = app_name()
    return app, source_url(aws.endpoint_url, STREAM, app=app, **{"failover-time": f"{FAILOVER:g}"})


def wait_until_moved(aws: LocalAws, app: str, shards: set[str], away_from: str, timeout: float) -> dict[str, float]:
    """Poll the lease table until each of `shards` has an owner other than `away_from`; when each did (monotonic)."""
    moved: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(moved) < len(shards):
        now = time.monotonic()
        for shard, lease in leases(aws, app).items():
            if shard in shards and shard not in moved and lease.owner and lease.owner != away_from:
                moved[shard] = now
        if time.monotonic() > deadline:
            raise AssertionError(f"{sorted(shards - moved.keys())} still not taken over after {timeout:.0f} s")
        time.sleep(0.2)
    return moved


def first_apply_after(workers: list[Worker], shards: set[str], since_wall: float, timeout: float) -> float:
    """Seconds from `since_wall` until one of `workers` applied records of each of `shards` (the slowest shard)."""

    def applied() -> dict[str, float] | None:
        firsts: dict[str, float] = {}
        for worker in workers:
            for status in worker.statuses().values():
                if status.shard_id in shards and status.first_applied_at and status.first_applied_at > since_wall:
                    firsts[status.shard_id] = min(
                        firsts.get(status.shard_id, status.first_applied_at), status.first_applied_at
                    )
        return firsts if firsts.keys() == shards else None

    firsts = wait_for(applied, timeout, f"records of {sorted(shards)} applied by another worker", interval=0.25)
    return max(firsts.values()) - since_wall


def taken_over(
    aws: LocalAws,
    app: str,
    crashed: Worker,
    orphaned: set[str],
    appliers: list[Worker],
    t_kill: float,
    t_kill_wall: float,
) -> tuple[float, float]:
    """After `crashed` was killed at t_kill (monotonic) / t_kill_wall: seconds until its shards had other owners,
    and until one of `appliers` applied records of each of them."""
    moved = wait_until_moved(aws, app, orphaned, crashed.worker_id, timeout=240)
    return max(moved.values()) - t_kill, first_apply_after(appliers, orphaned, t_kill_wall, timeout=240)


def stop_all(workers: list[Worker]) -> dict[str, int]:
    """Terminates the workers still running (their exit codes, by name) and cleans every one up."""
    codes = {worker.name: worker.terminate() for worker in workers if worker.process.poll() is None}
    for worker in workers:
        worker.cleanup()
    return codes


def applied_records(workers: list[Worker]) -> int:
    return sum(sum(worker.applied_per_shard().values()) for worker in workers)


def delivery(writers: Writers, applied: int) -> dict[str, int]:
    """What a scenario's writers wrote and put, and what its workers applied."""
    return {
        "item_writes": writers.writes,
        "records_put": writers.put,
        "records_applied": applied,
        "redelivered": applied - writers.put,
    }


def ending(sync: Sync, started: float) -> dict[str, float]:
    """How the target ended, compared with the DynamoDB table, and the scenario's time from `started` (monotonic)."""
    return {
        "items_at_end": len(sync.expected),
        "lost": sync.lost,
        "extra": len(sync.extra),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def start_fleet(aws: LocalAws, app: str, url: str, target_url: str, table: str, folder: Path) -> list[Worker]:
    """Three workers of one application, started together on a lease table written beforehand.

    KCL 3 hands unassigned leases to the workers its leader knows at that moment, and a worker that joins a fleet
    whose leases are all held gets one only at the next rebalancing pass, once a minute (measured: three workers
    started together, the first of them writing the lease table, held 2/2/0 leases and the third got one after
    70 s; started one after the other, 4/0/0, then one lease per pass, at 71 s and 132 s). With the lease table
    there (as prepare_leases writes it, the same as the first worker would), the three JVMs start at once and the
    first assignment usually sees all of them; when it does not, the first rebalancing pass spreads them.
    """
    tables = LeaseTables(app, f"{app}-CoordinatorState", f"{app}-WorkerMetricStats")
    prepare_leases(aws.client("dynamodb"), aws.client("kinesis"), tables, STREAM, "TRIM_HORIZON")
    return [Worker(f"w{i}", url, target_url, table, folder / f"w{i}.log") for i in range(3)]


@pytest.fixture(params=["cratedb", "postgresql"] if LONG else ["cratedb"])
def fleet_target(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_a_fleet_shares_hands_over_and_takes_over(fleet_target: str, tmp_path: Path) -> None:
    """a, f, b in one run of three workers on a 4-shard stream, writes going on throughout."""
    table = f"orders_fleet_{uuid.uuid4().hex[:6]}"
    spec = parse_target(fleet_target, table)
    started = time.monotonic()
    with LocalAws() as aws:
        app, url = failover_source(aws, shards=4)
        workers: list[Worker] = []
        try:
            with Writers(aws, TABLE, STREAM, n_keys=N_KEYS, pause=WRITE_PAUSE) as writers:
                t_start = time.monotonic()
                workers = start_fleet(aws, app, url, fleet_target, table, tmp_path)

                # a. the leases spread over all three workers, and each applies records of its shards
                def spread() -> dict[str, set[str]] | None:
                    held = owners(aws, app)
                    applying = all(any(s.first_applied_at for s in worker.statuses().values()) for worker in workers)
                    return held if applying and all(held.get(worker.worker_id) for worker in workers) else None

                spread_held = wait_for(spread, 240, "every worker holding a lease and applying records")
                spread_seconds = time.monotonic() - t_start
                time.sleep(SETTLE)

                # f. SIGTERM of one of three (one with the fewest leases): its leases go to another within seconds
                leaving = min(workers, key=lambda w: len(spread_held[w.worker_id]))
                handed = spread_held[leaving.worker_id]
                t_term = time.monotonic()
                leaving.process.send_signal(signal.SIGTERM)
                moved = wait_until_moved(aws, app, handed, leaving.worker_id, timeout=120)
                handover_seconds = max(moved.values()) - t_term
                term_code = leaving.process.wait(timeout=120)
                term_exit_seconds = time.monotonic() - t_term
                time.sleep(SETTLE)

                # b. SIGKILL of one of the two others (the whole of it: supervisor, JVM, processors, as a machine
                # failure would): its shards move to the last one. Not the KCL leader where there is a choice (the
                # leader's crash: test_b_a_crashed_leader_costs_what_any_crash_does).
                held = owners(aws, app)
                lead = leader(aws, app)
                remaining = [w for w in workers if w is not leaving and held.get(w.worker_id)]
                remaining.sort(key=lambda w: w.worker_id == lead)
                crashed = remaining[0]
                last = next(w for w in workers if w not in (leaving, crashed))
                crashed_leader = crashed.worker_id == lead
                orphaned = held[crashed.worker_id]
                t_kill, t_kill_wall = time.monotonic(), time.time()
                crashed.crash()
                takeover_seconds, takeover_apply_seconds = taken_over(
                    aws, app, crashed, orphaned, [last], t_kill, t_kill_wall
                )
                time.sleep(SETTLE)
            sync = wait_in_sync(aws, TABLE, spec, timeout=300)
            final_leases = owners(aws, app)
        finally:
            codes = stop_all(workers)
        logs = "\n".join(worker.tail() for worker in workers)
        applied = applied_records(workers)
        report(
            f"fleet[{spec.dialect}]",
            {
                "workers": 3,
                "shards": 4,
                "failover_time_s": FAILOVER,
                "spread_s": round(spread_seconds, 1),
                "leases_at_spread": {w.name: len(spread_held.get(w.worker_id, ())) for w in workers},
                "sigterm_leases": len(handed),
                "sigterm_handover_s": round(handover_seconds, 1),
                "sigterm_exit_code": term_code,
                "sigterm_exit_s": round(term_exit_seconds, 1),
                "sigkill_leases": len(orphaned),
                "sigkill_of_leader": crashed_leader,
                "sigkill_lease_takeover_s": round(takeover_seconds, 1),
                "sigkill_first_apply_s": round(takeover_apply_seconds, 1),
                **delivery(writers, applied),
                **ending(sync, started),
            },
        )
        assert sync.exact, f"the target is not the DynamoDB table: {sync.summary()}"
        assert term_code == 0, logs
        assert codes == {last.name: 0}, logs
        assert final_leases == {last.worker_id: {f"shardId-{i:012d}" for i in range(4)}}
        assert applied >= writers.put, "every record put was applied at least once"
        # Handed back, not expired: the stopping worker says so. The time goes to the report (docs/faults.md: 0.8-2 s
        # typically); the bound here is only what a crash would get, as the KCL leader may assign a released lease
        # back to the stopping worker while its JVM still reports metrics (seen once in CI: 17.9 s on a loaded run).
        assert "handed back" in leaving.log.read_text(errors="replace"), logs
        assert handover_seconds < FAILOVER + 15, f"the hand-over took {handover_seconds:.1f} s"
        assert takeover_seconds < FAILOVER + 15, f"the take-over took {takeover_seconds:.1f} s"


# b. the KCL leader crashed -----------------------------------------------------------------------------------------


def reporting_workers(aws: LocalAws, app: str) -> set[str]:
    """Workers with an entry in the KCL's worker metrics table: the ones its leader can assign leases to."""
    ddb = aws.client("dynamodb")
    try:
        items = ddb.scan(TableName=f"{app}-WorkerMetricStats", ConsistentRead=True)["Items"]
    except ddb.exceptions.ResourceNotFoundException:
        return set()
    return {item["wid"]["S"] for item in items if "wid" in item}


@pytest.fixture(params=["cratedb", "postgresql"])
def leader_target(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_b_a_crashed_leader_costs_what_any_crash_does(leader_target: str, tmp_path: Path) -> None:
    """SIGKILL of the worker holding the KCL leader lock (read from the KCL's lock item), one of three on four
    shards: its shards apply again within failover-time + 15 s (KCL 3.1.3's own lock, a 2-minute lease, cost
    123 s), and the target ends exact."""
    table = f"orders_leader_{uuid.uuid4().hex[:6]}"
    spec = parse_target(leader_target, table)
    started = time.monotonic()
    with LocalAws() as aws:
        app, url = failover_source(aws, shards=4)
        workers: list[Worker] = []
        try:
            with Writers(aws, TABLE, STREAM, n_keys=N_KEYS, pause=WRITE_PAUSE) as writers:
                workers = start_fleet(aws, app, url, leader_target, table, tmp_path)

                # The leader holds a lease it applies records of, and both others can be given leases.
                def ready() -> tuple[Worker, set[str]] | None:
                    lead, held = leader(aws, app), owners(aws, app)
                    by_id = {worker.worker_id: worker for worker in workers if worker.state_dir}
                    if lead not in by_id or not held.get(lead) or not reporting_workers(aws, app) >= by_id.keys():
                        return None
                    applying = any(s.first_applied_at for s in by_id[lead].statuses().values())
                    return (by_id[lead], held[lead]) if applying and len(by_id) == len(workers) else None

                crashed, orphaned = wait_for(ready, 240, "the leader holding a lease and applying, three workers")
                time.sleep(SETTLE)
                orphaned = owners(aws, app).get(crashed.worker_id, orphaned)
                survivors = [worker for worker in workers if worker is not crashed]
                t_kill, t_kill_wall = time.monotonic(), time.time()
                crashed.crash()
                new_leader = wait_for(
                    lambda: (lead := leader(aws, app)) != crashed.worker_id and lead, 240, "another leader"
                )
                lock_seconds = time.monotonic() - t_kill
                takeover_seconds, apply_seconds = taken_over(
                    aws, app, crashed, orphaned, survivors, t_kill, t_kill_wall
                )
                time.sleep(SETTLE)
            sync = wait_in_sync(aws, TABLE, spec, timeout=300)
        finally:
            codes = stop_all(workers)
        logs = "\n".join(worker.tail() for worker in workers)
        applied = applied_records(workers)
        report(
            f"leader-crash[{spec.dialect}]",
            {
                "workers": 3,
                "shards": 4,
                "failover_time_s": FAILOVER,
                "leader_leases": len(orphaned),
                "leader_lock_takeover_s": round(lock_seconds, 1),
                "leader_lease_takeover_s": round(takeover_seconds, 1),
                "leader_first_apply_s": round(apply_seconds, 1),
                **delivery(writers, applied),
                **ending(sync, started),
            },
        )
        assert new_leader in {worker.worker_id for worker in survivors}
        assert sync.exact, f"the target is not the DynamoDB table: {sync.summary()}"
        assert codes == {worker.name: 0 for worker in survivors}, logs
        assert applied >= writers.put, "every record put was applied at least once"
        assert apply_seconds < FAILOVER + 15, f"the leader's shards applied again after {apply_seconds:.1f} s"


# c. every worker restarted mid-stream ----------------------------------------------------------------------------


def stream_positions(aws: LocalAws) -> dict[str, list[int]]:
    """Every record's sequence number in the Kinesis stream, per shard, in order (to count up to a checkpoint)."""
    kinesis = aws.client("kinesis")
    positions: dict[str, list[int]] = {}
    for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        numbers: list[int] = []
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            numbers += [int(record["SequenceNumber"]) for record in page["Records"]]
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
        positions[shard_id] = numbers
    return positions


def covered(positions: dict[str, list[int]], checkpoints: dict[str, str]) -> dict[str, int]:
    """Per shard, the records at or before its checkpoint (a sentinel such as TRIM_HORIZON: none)."""
    return {
        shard: sum(
            1 for number in numbers if checkpoints.get(shard, "").isdigit() and number <= int(checkpoints[shard])
        )
        for shard, numbers in positions.items()
    }


def at_the_end(positions: dict[str, list[int]], checkpoints: dict[str, str]) -> bool:
    """Every shard's checkpoint is at its last record."""
    return covered(positions, checkpoints) == {shard: len(numbers) for shard, numbers in positions.items()}


def checkpoints(aws: LocalAws, app: str) -> dict[str, str]:
    return {shard: lease.checkpoint for shard, lease in leases(aws, app).items()}


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"] if LONG else ["postgresql"])
def restart_target(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_every_worker_restarted_resumes_from_checkpoints(restart_target: str, tmp_path: Path) -> None:
    """Two workers (worker-id set, so a restart finds its leases) restarted twice while writes go on: first
    gracefully (SIGTERM: flushed and checkpointed, nothing is delivered twice), then by a crash (SIGKILL: what was
    applied after the last checkpoint is delivered again, and changes nothing)."""
    table = f"orders_restart_{uuid.uuid4().hex[:6]}"
    spec = parse_target(restart_target, table)
    started = time.monotonic()
    with LocalAws() as aws:
        app, url = failover_source(aws, shards=4)
        runs: list[list[Worker]] = []

        def start(run: int) -> list[Worker]:
            workers = [
                Worker(
                    f"{name}-run{run}", f"{url}&worker-id={name}", restart_target, table, tmp_path / f"{name}-{run}.log"
                )
                for name in ("wa", "wb")
            ]
            runs.append(workers)
            return workers

        def applying_after(workers: list[Worker], since_wall: float) -> None:
            wait_for(
                lambda: any(
                    (s.last_applied_at or 0) > since_wall for worker in workers for s in worker.statuses().values()
                ),
                180,
                "records applied by the restarted workers",
            )

        try:
            with Writers(aws, TABLE, STREAM, n_keys=N_KEYS, pause=WRITE_PAUSE) as writers:
                first = start(1)
                applying_after(first, 0)
                time.sleep(SETTLE)

                # graceful restart of every worker
                for worker in first:
                    worker.process.send_signal(signal.SIGTERM)
                graceful_codes = [worker.process.wait(timeout=120) for worker in first]
                at_stop = checkpoints(aws, app)
                t_restart = time.time()
                second = start(2)
                applying_after(second, t_restart)
                graceful_resume_seconds = time.time() - t_restart
                time.sleep(SETTLE)

                # crash of every worker, then a restart
                for worker in second:
                    worker.crash()
                at_crash = checkpoints(aws, app)
                t_restart = time.time()
                third = start(3)
                applying_after(third, t_restart)
                crash_resume_seconds = time.time() - t_restart
                time.sleep(SETTLE)
            sync = wait_in_sync(aws, TABLE, spec, timeout=300)
            positions = stream_positions(aws)  # the writers stopped: the whole stream
            if sync.exact:  # run 3 checkpoints each shard at its last record before it is stopped
                wait_for(
                    lambda: at_the_end(positions, checkpoints(aws, app)), 120, "every shard checkpointed at its end"
                )
        finally:
            final_codes = [worker.terminate() for worker in runs[-1]] if runs else []
            for worker in (w for run in runs for w in run):
                worker.cleanup()
        logs = "\n".join(worker.tail() for run in runs for worker in run)

    records = {shard: len(numbers) for shard, numbers in positions.items()}
    account = account_restarts(
        records,
        covered(positions, at_stop),
        covered(positions, at_crash),
        [[worker.flushes() for worker in run] for run in runs],
    )
    report(
        f"restart[{spec.dialect}]",
        {
            "workers": 2,
            "shards": 4,
            "item_writes": writers.writes,
            "records_put": writers.put,
            "records_applied_per_run": [applied_records(run) for run in runs],
            "graceful_restart_redelivered": account.graceful_redelivered,
            "graceful_restart_resume_s": round(graceful_resume_seconds, 1),
            "crash_restart_redelivered": account.crash_redelivered,
            "crash_restart_unacknowledged_at_most": account.crash_bound,
            "crash_restart_resume_s": round(crash_resume_seconds, 1),
            "redelivered_total": account.applied - account.records,
            "undelivered": account.undelivered,
            **ending(sync, started),
        },
    )
    assert sync.exact, f"the target is not the DynamoDB table: {sync.summary()}"
    assert graceful_codes == [0, 0] and final_codes == [0, 0], logs
    assert account.records == writers.put
    assert account.undelivered == 0, "every record is applied at least once"
    assert account.graceful_redelivered == 0, "a graceful stop checkpoints everything it applied"
    # Each flush is checkpointed right after its commit: a crash leaves at most each worker's last flush behind.
    assert 0 <= account.crash_redelivered <= account.crash_bound, account
    assert account.applied - account.records == account.crash_redelivered, "no other record twice"


# e. poison records mixed into a live stream ----------------------------------------------------------------------


def envelope(**dynamodb: object) -> dict[str, object]:
    """A Kinesis Data Streams for DynamoDB record of table TABLE around `dynamodb` (the parts a poison spoils)."""
    return {
        "awsRegion": "us-east-1",
        "eventID": str(uuid.uuid4()),
        "eventName": "INSERT",
        "recordFormat": "application/json",
        "tableName": TABLE,
        "eventSource": "aws:dynamodb",
        "dynamodb": {"ApproximateCreationDateTimePrecision": "MICROSECOND", "SizeBytes": 60, **dynamodb},
    }


NOW_MICROS = 1_795_000_000_000_000
POISON_KEYS = {"tenant": {"S": "poison"}, "id": {"N": "1"}}  # never an item of the workload
POISONS: list[tuple[str, bytes, str]] = [  # (kind, record data, what the dead letter's reason says)
    ("invalid JSON", b'{"eventName": "INSERT", "dynamodb": {', "not JSON"),
    ("not UTF-8", b'\xff\xfe{"eventName"}', "not JSON"),
    ("a JSON array", b"[1, 2, 3]", "not a JSON object"),
    (
        "missing Keys",
        json.dumps(envelope(ApproximateCreationDateTime=NOW_MICROS, NewImage=POISON_KEYS)).encode(),
        "dynamodb.Keys is missing",
    ),
    (
        "unknown eventName",
        json.dumps(
            {
                **envelope(ApproximateCreationDateTime=NOW_MICROS, Keys=POISON_KEYS, NewImage=POISON_KEYS),
                "eventName": "UPSERT",
            }
        ).encode(),
        "eventName is not INSERT, MODIFY or REMOVE",
    ),
    (
        "a key of the wrong type",
        json.dumps(
            envelope(
                ApproximateCreationDateTime=NOW_MICROS,
                Keys={"tenant": {"BOOL": True}, "id": {"N": "1"}},
                NewImage={"tenant": {"BOOL": True}, "id": {"N": "1"}},
            )
        ).encode(),
        "is not of type S, N or B",
    ),
    (
        "a time of the wrong type",
        json.dumps(envelope(ApproximateCreationDateTime="yesterday", Keys=POISON_KEYS, NewImage=POISON_KEYS)).encode(),
        "ApproximateCreationDateTime is not a number",
    ),
]


@pytest.fixture(params=["cratedb", "postgresql", "sqlite"])
def poison_target(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_poison_records_are_dead_lettered_with_their_reason(poison_target: str, tmp_path: Path) -> None:
    """Malformed records put straight into the stream between the pumped item changes: each one dead-lettered with
    its reason, every item change applied, the target exact."""
    table = f"orders_poison_{uuid.uuid4().hex[:6]}"
    spec = parse_target(poison_target, table)
    rounds = 6 if LONG else 2
    every = 40 if LONG else 15  # item writes between two poison records
    started = time.monotonic()
    with LocalAws() as aws:
        fresh_source(aws, shards=2)
        kinesis = aws.client("kinesis")
        put: list[bytes] = []

        def poison(writes: int) -> None:
            if writes % every == 0 and len(put) < rounds * len(POISONS):
                data = POISONS[len(put) % len(POISONS)][1]
                kinesis.put_record(StreamName=STREAM, Data=data, PartitionKey=f"poison-{len(put)}")
                put.append(data)

        worker = Worker(
            "w", source_url(aws.endpoint_url, STREAM, app=app_name()), poison_target, table, tmp_path / "w.log"
        )
        try:
            with Writers(aws, TABLE, STREAM, n_keys=N_KEYS, pause=WRITE_PAUSE, between=poison) as writers:
                wait_for(lambda: len(put) == rounds * len(POISONS), 300, "every poison record put", interval=1)
                time.sleep(SETTLE)
            sync = wait_in_sync(aws, TABLE, spec, timeout=300)

            def letters() -> list[tuple[str, str]] | None:
                found = dead_letters(spec)
                return found if len(found) >= len(put) else None

            found = wait_for(letters, 120, "every poison record dead-lettered")
        finally:
            code = worker.terminate()
            worker.cleanup()
    assert code == 0, worker.tail()
    by_raw: dict[str, list[str]] = {}
    for raw, reason in found:
        by_raw.setdefault(raw, []).append(reason)
    assert len(found) == len(put), f"{len(found)} dead letters for {len(put)} poison records"
    for kind, data, says in POISONS:
        raw = data.decode("utf-8", errors="replace")
        reasons = by_raw.get(raw, [])  # the relay keeps a record that is not UTF-8 with replacement characters
        assert len(reasons) == rounds, f"{kind}: {len(reasons)} dead letters, {rounds} put"
        assert all(says in reason for reason in reasons), f"{kind}: {reasons[:1]}"
    report(
        f"poison[{spec.dialect}]",
        {
            "item_writes": writers.writes,
            "records_put": writers.put + len(put),
            "poison_records": len(put),
            "dead_letters": len(found),
            **ending(sync, started),
        },
    )
    assert sync.exact, f"the target is not the DynamoDB table: {sync.summary()}"


def dead_letters(spec: TargetSpec) -> list[tuple[str, str]]:
    """(raw record, reason) of every dead letter of the target table."""
    relation_name = relation(spec, DEADLETTERS_SUFFIX)
    try:
        if spec.dialect == "cratedb":
            run_sql(spec, f"REFRESH TABLE {relation_name}")
        _, rows = run_sql(spec, f"SELECT raw, reason FROM {relation_name}")
    except Exception:  # the table appears with the first dead letter
        return []
    return [(str(raw), str(reason)) for raw, reason in rows]


def test_the_jvm_stops_when_kcl_relay_is_killed(tmp_path: Path) -> None:
    """SIGKILL of kcl-relay alone (not its JVM's session): the JVM gets SIGTERM and stops gracefully, instead of
    going on headless with its leases (it did: still running 8 s after)."""
    with LocalAws() as aws:
        fresh_source(aws, shards=1)
        worker = Worker(
            "w",
            source_url(aws.endpoint_url, STREAM, app=app_name()),
            "sqlite:///" + str(tmp_path / "t.db"),
            "t",
            tmp_path / "w.log",
        )
        jvm = wait_for(worker.jvm_pid, 60, "the KCL's JVM")
        try:
            wait_for(lambda: worker.statuses(), 120, "a processor")
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(timeout=30)
            t_kill = time.monotonic()
            wait_for(lambda: not Path(f"/proc/{jvm}").exists(), 60, "the JVM to stop")
            stopped_seconds = time.monotonic() - t_kill
        finally:
            with contextlib.suppress(ProcessLookupError):  # a failed test leaves no JVM behind
                os.killpg(jvm, signal.SIGKILL)
        processor_log = (worker.state_dir / "processor.log").read_text()
    assert "shutdown requested, flushed and checkpointed" in processor_log
    report("supervisor-killed", {"jvm_stopped_s": round(stopped_seconds, 1)})
