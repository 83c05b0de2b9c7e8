"""Benchmark: peak memory of redrive, the full load's prune and verify, before and after their paging.

    python -m benchmarks.memory [--n 100000] [--targets sqlite postgresql cratedb] [--before /work/main]

Each operation runs in a fresh subprocess (`python -c`, the same code for both sides, through the API both
have): "before" with PYTHONPATH=--before (the main branch's checkout), "after" with this tree. Its peak RSS is the
child's VmHWM from /proc at its end, beside its RSS once the modules are imported, so the growth is what the
operation added (`getrusage(RUSAGE_CHILDREN)` would not do: Linux carries a parent's peak into its child at exec).
Sizes: --n dead letters (small INSERT records), --n stale rows for the prune, --n items in moto's DynamoDB (small:
two key attributes and a 20-character string) that the target holds too, for a full verify that must say in sync.
The batch sizes are the defaults: redrive 1000, the full load's batch-size 500, verify's pages of 5000 rows.
PostgreSQL is started for the run; CrateDB is the server at CRATEDB_SQLALCHEMY_URL (fresh tables, dropped after),
else a node started from the release tarball (tests/support/cratedb.py). Writes benchmarks/results/memory.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType, Position
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_table
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter

RESULTS = Path(__file__).parent / "results" / "memory"
AFTER = Path(__file__).resolve().parent.parent
KEY_TYPES: dict[str, KeyType] = {"tenant": "S", "id": "N"}
T0 = 1_735_689_600_000_000  # µs: the rows' and letters' versions
WRITE_BATCH = 1000
# Scan pages for verify: DynamoDB's own 1 MB pages of these small items hold ~16,000 each, some 25-40 MB of Python
# objects per scan thread, whatever the table's size, which would hide what grows with the table. Both runs.
VERIFY_PAGE = 1000

# The child: imports first (its RSS then is the baseline), then one operation; prints what it saw as JSON.
CHILD = r"""
import json, sys, time
from kcl_relay.sink.target import parse_target
from kcl_relay.redrive import redrive
from kcl_relay import fullload
from kcl_relay.source.dynamodb import TableInfo
from kcl_relay.source.table_url import parse_table
from kcl_relay.verify import VerifyOptions, compare

job = json.loads(sys.argv[1])
def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
baseline = status_kb("VmRSS")
target = parse_target(job["target"], job["table"])
started = time.perf_counter()
if job["op"] == "redrive":
    report = redrive(target, batch_size=job["batch_size"])
    result = {"letters": report.letters, "applied": report.applied, "failed_again": report.failed_again}
elif job["op"] == "prune":
    spec = parse_table(job["source"] + "?batch-size=" + str(job["batch_size"]))
    info = TableInfo("bench", ("tenant", "id"), {"tenant": "S", "id": "N"}, 0, 0)
    snapshot = fullload.Snapshot(spec, target, None, info, None)
    snapshot.first_version = job["first_version"]
    snapshot._prune()
    result = {"pruned": snapshot.stats.pruned}
else:
    spec = parse_table(job["source"])
    report, _ = compare(spec, target, VerifyOptions(settle=0))
    result = {"in_sync": report.in_sync, "dynamodb_items": report.dynamodb_items, "target_rows": report.target_rows}
seconds = time.perf_counter() - started
print(json.dumps({"baseline_kb": baseline, "peak_kb": status_kb("VmHWM"), "seconds": seconds, "result": result}))
"""


def child(tree: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run one operation in a subprocess with `tree` on PYTHONPATH: its peak RSS (VmHWM, what this process's memory
    reached since its exec) and its RSS after the imports. Not wait4's ru_maxrss: Linux carries the parent's peak
    over into a child's at exec, so every child would report at least this benchmark's own size."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}  # never write into --before
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(job)],
        env=env,
        cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    out = process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError(f"{job['op']} with {tree} failed (exit {process.returncode})")
    return dict(json.loads(out.strip().splitlines()[-1]))


# ---- the data ----------------------------------------------------------------------------------------------------


def item(i: int) -> dict[str, Any]:
    return {"tenant": f"tenant-{i % 97}", "id": i, "v": f"value {i:014d}"}


def cdc_json(i: int) -> str:
    """A small Kinesis record of DynamoDB: an INSERT of item(i)."""
    image = {"tenant": {"S": f"tenant-{i % 97}"}, "id": {"N": str(i)}, "v": {"S": f"value {i:014d}"}}
    record = {
        "awsRegion": "eu-central-1",
        "eventID": f"{i:032x}",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "recordFormat": "application/json",
        "tableName": "bench",
        "dynamodb": {
            "ApproximateCreationDateTime": T0 + i,
            "ApproximateCreationDateTimePrecision": "MICROSECOND",
            "Keys": {"tenant": image["tenant"], "id": image["id"]},
            "NewImage": image,
            "SizeBytes": 60,
        },
    }
    return json.dumps(record)


def write_letters(spec: TargetSpec, n: int) -> None:
    sink = TableWriter(spec)
    try:
        sink.ensure_table(KEY_TYPES)
        start_at = datetime.now(timezone.utc) - timedelta(hours=1)
        for start in range(0, n, WRITE_BATCH):
            sink.dead_letter(
                [
                    DeadLetter(cdc_json(i), "rejected earlier", "shardId-000000000000", str(i + 1), start_at)
                    for i in range(start, min(n, start + WRITE_BATCH))
                ]
            )
    finally:
        sink.close()


def write_rows(spec: TargetSpec, n: int) -> None:
    sink = TableWriter(spec)
    try:
        sink.ensure_table(KEY_TYPES)
        for start in range(0, n, WRITE_BATCH):
            events = []
            for i in range(start, min(n, start + WRITE_BATCH)):
                image = item(i)
                key = {"tenant": image["tenant"], "id": i}
                events.append(ChangeEvent("INSERT", "bench", key, KEY_TYPES, image, T0, Position("shardId-0", str(i))))
            sink.apply(events)
    finally:
        sink.close()


def fill_dynamodb(ddb: Any, n: int) -> None:
    create_table(ddb, "bench", (("tenant", "S"), ("id", "N")), stream=False)
    for start in range(0, n, 25):
        requests = []
        for i in range(start, min(n, start + 25)):
            wire = {"tenant": {"S": f"tenant-{i % 97}"}, "id": {"N": str(i)}, "v": {"S": f"value {i:014d}"}}
            requests.append({"PutRequest": {"Item": wire}})
        pending: dict[str, Any] = {"bench": requests}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def drop(spec: TargetSpec) -> None:
    if spec.dialect != "cratedb":
        return
    for suffix in ("", "__tombstones", "__deadletters", "__relay"):
        run_sql(spec, f'DROP TABLE IF EXISTS "{spec.schema}"."{spec.table}{suffix}"')


@contextmanager
def targets(names: list[str]) -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kcl-relay-memory-")))
        for name in names:
            if name == "sqlite":
                urls["SQLite"] = f"sqlite:///{work / 'bench.db'}"
            elif name == "postgresql":
                from tests.support.postgres import running_postgres

                urls["PostgreSQL"] = stack.enter_context(running_postgres()).create_database("bench")
            elif name == "cratedb" and os.environ.get("CRATEDB_SQLALCHEMY_URL"):
                urls["CrateDB"] = os.environ["CRATEDB_SQLALCHEMY_URL"]
            elif name == "cratedb":  # a node of its own, from the release tarball
                from tests.support.cratedb import CrateUnavailable, find_tarball, running_cratedb

                try:
                    urls["CrateDB"] = stack.enter_context(running_cratedb(find_tarball())).url()
                except CrateUnavailable as missing:
                    print(f"CrateDB skipped: {missing}")
        yield urls


# ---- the run -----------------------------------------------------------------------------------------------------


def measure(name: str, url: str, source: str, n: int, before: Path) -> list[dict[str, Any]]:
    rows = []
    sides = (("before", before), ("after", AFTER))

    def record(op: str, side: str, run: dict[str, Any]) -> None:
        load = os.getloadavg()[0]
        rows.append({"target": name, "op": op, "side": side, "load_1min": load, **run})
        growth = (run["peak_kb"] - run["baseline_kb"]) / 1024
        print(
            f"{name:10} {op:18} {side:6} peak {run['peak_kb'] / 1024:6.1f} MB (+{growth:5.1f} MB over imports) "
            f"{run['seconds']:6.1f} s {run['result']} load {load:.1f}",
            flush=True,
        )

    for side, tree in sides:
        spec = parse_target(url, f"mem_redrive_{uuid.uuid4().hex[:8]}")
        try:
            write_letters(spec, n)
            run = child(tree, {"op": "redrive", "target": url, "table": spec.qualified_table, "batch_size": 1000})
            assert run["result"] == {"letters": n, "applied": n, "failed_again": 0}, run
            record("redrive", side, run)
        finally:
            drop(spec)

    spec = parse_target(url, f"mem_verify_{uuid.uuid4().hex[:8]}")
    try:
        write_rows(spec, n)
        for op, query in (("verify", f"?page-size={VERIFY_PAGE}"), ("verify, 1 MB pages", "")):
            for side, tree in sides:
                job = {"op": "verify", "target": url, "table": spec.qualified_table, "source": source + query}
                run = child(tree, job)
                assert run["result"] == {"in_sync": True, "dynamodb_items": n, "target_rows": n}, run
                record(op, side, run)
        for index, (side, tree) in enumerate(sides):
            if index:
                write_rows(spec, n)  # the prune before removed them all
            job = {"op": "prune", "target": url, "table": spec.qualified_table, "source": source}
            run = child(tree, {**job, "first_version": T0 + 1, "batch_size": 500})
            assert run["result"] == {"pruned": n}, run
            record("prune", side, run)
            _clear_tombstones(spec)  # else they would turn the next side's rows stale
    finally:
        drop(spec)
    return rows


def _clear_tombstones(spec: TargetSpec) -> None:
    relation = f'"{spec.schema}"."{spec.table}__tombstones"' if spec.schema else f'"{spec.table}__tombstones"'
    run_sql(spec, f"DELETE FROM {relation}", commit=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--targets", nargs="+", default=["sqlite", "postgresql", "cratedb"])
    parser.add_argument("--before", type=Path, default=Path("/work/main"), help="the checkout measured as before")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    with LocalAws() as aws, targets(args.targets) as urls:
        fill_started = time.monotonic()
        fill_dynamodb(aws.client("dynamodb"), args.n)
        print(f"moto: {args.n} items in {time.monotonic() - fill_started:.0f} s", flush=True)
        source = f"dynamodb://test:test@{aws.endpoint_url.removeprefix('http://')}/bench"
        for name, url in urls.items():
            rows.extend(measure(name, url, source, args.n, args.before))
            write(args, load_before, started, rows)  # after each target: a run cut short keeps what it measured


def write(args: argparse.Namespace, load_before: tuple[float, ...], started: float, rows: list[dict[str, Any]]) -> None:
    load_after = os.getloadavg()
    meta = {
        "n": args.n,
        "before": str(args.before),
        "after": str(AFTER),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "minutes": (time.monotonic() - started) / 60,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps({**meta, "runs": rows}, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(report(meta, rows))
    print(f"wrote {RESULTS.with_suffix('.md')} and .json")


def report(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    by = {(row["target"], row["op"], row["side"]): row for row in rows}
    lines = [
        "# Memory benchmark: redrive, prune, verify",
        "",
        f"{meta['n']:,} dead letters (small INSERT records), {meta['n']:,} stale rows, {meta['n']:,} items (in moto's",
        "DynamoDB and in the target, for a full verify in sync; 4 Scan segments, `page-size=1000`, and DynamoDB's",
        "own 1 MB pages: ~16,000 of these items each, 25-40 MB of Python objects per scan thread at any table size).",
        "Each operation in a fresh subprocess; peak RSS is its",
        'VmHWM (/proc) at the end; "over imports" subtracts its RSS once its modules were loaded.',
        f"Before: `{meta['before']}` (the main branch); after: this tree. Default batch sizes (redrive 1000, the",
        "full load's batch-size 500, verify's 5000-row pages). "
        f"Machine: {meta['machine']}, {meta['cores']} cores shared with other jobs, Python {meta['python']},",
        f"{meta['date']}; load average (1, 5, 15 min) {_load(meta['load_average_before'])} before, "
        f"{_load(meta['load_average_after'])} after; {meta['minutes']:.0f} minutes. `python -m benchmarks.memory`.",
        "",
        "Reading verify: before, the DynamoDB side's digests sit in a dict (~170 bytes per item, growing with the",
        "table); after, in a temporary SQLite file whose page cache is capped at 8 MB, which at 100,000 items (a 6 MB",
        "file, measured) still holds them all, so the two differ by less than the dict's size here; past the cap the",
        "dict keeps growing and the file does not. With DynamoDB's own 1 MB pages the scan threads' pages dominate",
        "both (bounded by segments x 1 MB, not by the table); `page-size` lowers that. The page-size=1000 runs are",
        "slower because moto answers each Scan request by hashing every item of the table.",
        "",
        "| target | operation | peak RSS before MB | after MB | growth over imports before MB | after MB | "
        "seconds before | after | load (1 min) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for target in dict.fromkeys(row["target"] for row in rows):
        for op in ("redrive", "prune", "verify", "verify, 1 MB pages"):
            old, new = by.get((target, op, "before")), by.get((target, op, "after"))
            if not (old and new):
                continue
            grown = [(run["peak_kb"] - run["baseline_kb"]) / 1024 for run in (old, new)]
            lines.append(
                f"| {target} | {op} | {old['peak_kb'] / 1024:.1f} | {new['peak_kb'] / 1024:.1f} | "
                f"{grown[0]:.1f} | {grown[1]:.1f} | {old['seconds']:.1f} | {new['seconds']:.1f} | "
                f"{old['load_1min']:.1f}, {new['load_1min']:.1f} |"
            )
    return "\n".join([*lines, ""])


def _load(values: Any) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


if __name__ == "__main__":
    main()
