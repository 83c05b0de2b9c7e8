"""Fault scenarios through real workers: separate `kcl-relay load table` processes (the KCL MultiLangDaemon and our
processors) on the emulators, item writes going on in the DynamoDB emulator (pumped into the Kinesis stream as
"Kinesis Data Streams for DynamoDB" would), and a Scan of the DynamoDB table as the oracle: at the end the target
equals it exactly (nothing lost, nothing extra, nothing stale).

| scenario | test |
| --- | --- |
| a. three workers share a 4-shard stream | test_a_fleet_shares_hands_over_and_takes_over |
| f. SIGTERM of one of three: graceful hand-over | test_a_fleet_shares_hands_over_and_takes_over |
| b. SIGKILL of one worker: take-over after failover-time | test_a_fleet_shares_hands_over_and_takes_over |
| c. every worker restarted (gracefully, then crashed) | test_every_worker_restarted_resumes_from_checkpoints |
| d. database outage | tests/e2e/test_outage_e2e.py |
| e. poison records in a live stream | test_poison_records_are_dead_lettered_with_their_reason |

The short form runs in CI; KCL_RELAY_FAULTS_LONG=1 runs the long form (more keys, longer writes, the default
failover time), and KCL_RELAY_FAULTS_REPORT=FILE.json records the measured figures (benchmarks/faults.py does both
and writes benchmarks/results/faults.md). docs/faults.md has the table with the figures.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from tests.support.e2e import app_name, source_url, wait_for
from tests.support.faults import (
    KEY_SCHEMA,
    LONG,
    Worker,
    Writers,
    leases,
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


def fresh_source(aws: LocalAws, shards: int) -> None:
    create_table(aws.client("dynamodb"), TABLE, KEY_SCHEMA)
    create_stream(aws.client("kinesis"), STREAM, shards=shards)


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


def up_to(positions: dict[str, list[int]], checkpoints: dict[str, str]) -> int:
    """Records at or before the checkpoints (a sentinel such as TRIM_HORIZON: none)."""
    return sum(
        sum(1 for number in positions[shard] if number <= int(checkpoint))
        for shard, checkpoint in checkpoints.items()
        if checkpoint.isdigit()
    )


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
        fresh_source(aws, shards=4)
        app = app_name()
        url = source_url(aws.endpoint_url, STREAM, app=app, **{"failover-time": f"{FAILOVER:g}"})
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
            expected = wait_in_sync(aws, TABLE, spec, timeout=300)
        finally:
            final_codes = [worker.terminate() for worker in runs[-1]] if runs else []
            for worker in (w for run in runs for w in run):
                worker.cleanup()
        logs = "\n".join(worker.tail() for run in runs for worker in run)
        positions = stream_positions(aws)

    applied = [sum(sum(w.applied_per_shard().values()) for w in run) for run in runs]
    checkpointed_at_stop, checkpointed_at_crash = up_to(positions, at_stop), up_to(positions, at_crash)
    # Run 1 stopped gracefully: it applied exactly what its checkpoints cover. Run 2 started there and was
    # killed: what it applied past its last checkpoints, run 3 delivers again.
    graceful_redelivered = applied[0] - checkpointed_at_stop
    crash_redelivered = applied[1] - (checkpointed_at_crash - checkpointed_at_stop)
    total_records = sum(len(numbers) for numbers in positions.values())
    report(
        f"restart[{spec.dialect}]",
        {
            "workers": 2,
            "shards": 4,
            "item_writes": writers.writes,
            "records_put": writers.put,
            "records_applied_per_run": applied,
            "graceful_restart_redelivered": graceful_redelivered,
            "graceful_restart_resume_s": round(graceful_resume_seconds, 1),
            "crash_restart_redelivered": crash_redelivered,
            "crash_restart_resume_s": round(crash_resume_seconds, 1),
            "redelivered_total": sum(applied) - total_records,
            "items_at_end": len(expected),
            "lost": 0,  # wait_in_sync: the target equals the scan
            "elapsed_s": round(time.monotonic() - started, 1),
        },
    )
    assert graceful_codes == [0, 0] and final_codes == [0, 0], logs
    assert total_records == writers.put
    assert graceful_redelivered == 0, "a graceful stop checkpoints everything it applied"
    assert crash_redelivered >= 0
    assert sum(applied) - total_records == graceful_redelivered + crash_redelivered, "no other record twice"


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
            expected = wait_in_sync(aws, TABLE, spec, timeout=300)

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
        reasons = by_raw.get(raw) or [
            r for key, rs in by_raw.items() if key.encode("utf-8", "replace") == data for r in rs
        ]
        assert len(reasons) == rounds, f"{kind}: {len(reasons)} dead letters, {rounds} put"
        assert all(says in reason for reason in reasons), f"{kind}: {reasons[:1]}"
    report(
        f"poison[{spec.dialect}]",
        {
            "item_writes": writers.writes,
            "records_put": writers.put + len(put),
            "poison_records": len(put),
            "dead_letters": len(found),
            "items_at_end": len(expected),
            "lost": 0,  # wait_in_sync: the target equals the scan
            "elapsed_s": round(time.monotonic() - started, 1),
        },
    )


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
