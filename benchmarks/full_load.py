"""Benchmark: the full load (parallel Scan into the target) and verify, from the emulated DynamoDB (moto).

    python -m benchmarks.full_load [--items 20000] [--segments 1 4] [--targets sqlite postgresql cratedb]

Writes benchmarks/results/full_load.md and .json. Every load is checked by a full verify (in sync, or the run
fails), so a fast but wrong run cannot pass as a result. "scan only" reads every page and builds the events without
writing them: what the emulator and the decoding cost alone. PostgreSQL is started on 127.0.0.1 for the run;
CrateDB from the release tarball (tests/support/cratedb.py) when it is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kcl_relay import fullload
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_table, fill_table
from kcl_relay.sink.target import parse_target
from kcl_relay.source import dynamodb
from kcl_relay.source.table_url import parse_table
from kcl_relay.verify import VerifyOptions, compare

RESULTS = Path(__file__).parent / "results" / "full_load"
KEY_SCHEMA = (("tenant", "S"), ("id", "N"))


@contextmanager
def targets(names: list[str], work: Path) -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    with ExitStack() as stack:
        for name in names:
            if name == "sqlite":
                urls["SQLite"] = f"sqlite:///{work / 'bench.db'}"
            elif name == "postgresql":
                from tests.support.postgres import running_postgres

                urls["PostgreSQL"] = stack.enter_context(running_postgres()).create_database("bench")
            elif name == "cratedb":
                from tests.support.cratedb import CrateUnavailable, find_tarball, running_cratedb

                try:
                    urls["CrateDB"] = stack.enter_context(running_cratedb(find_tarball())).url()
                except CrateUnavailable as missing:
                    print(f"CrateDB skipped: {missing}")
        yield urls


def scan_only(url: str, segments: int) -> float:
    """Read every page and build every event, writing nothing."""
    spec = parse_table(f"{url}?segments={segments}")
    ddb, clock = dynamodb.client(spec), dynamodb.AwsClock()
    info = dynamodb.describe(spec, ddb, clock)
    started = time.perf_counter()

    def read(segment: int) -> None:
        for page in dynamodb.scan_segment(ddb, spec, segment, segments, clock, threading.Event()):
            for raw in page.items:
                dynamodb.snapshot_event(raw, info, page.version, 1)

    threads = [threading.Thread(target=read, args=(segment,)) for segment in range(segments)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def load_and_verify(url: str, target_url: str, segments: int, batch_size: int) -> tuple[float, float]:
    spec = parse_table(f"{url}?segments={segments}&batch-size={batch_size}")
    target = parse_target(target_url, f"bench_{uuid.uuid4().hex[:8]}")
    ddb, clock = dynamodb.client(spec), dynamodb.AwsClock()
    info = dynamodb.describe(spec, ddb, clock)
    fullload.prepare_target(target, info)
    snapshot = fullload.Snapshot(spec, target, ddb, info, clock)
    started = time.perf_counter()
    snapshot.run(threading.Event())
    loaded = time.perf_counter() - started
    assert snapshot.complete and snapshot.stats.dead_letters == 0
    started = time.perf_counter()
    report, _ = compare(spec, target, VerifyOptions(settle=0))
    verified = time.perf_counter() - started
    assert report.in_sync, report.lines(spec.table, target.describe(), 5)
    return loaded, verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--segments", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--targets", nargs="+", default=["sqlite", "postgresql", "cratedb"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kcl-relay-bench-"))
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[1]  # the machine may be shared: say how busy it was
    with LocalAws() as aws, targets(args.targets, work) as urls:
        ddb = aws.client("dynamodb")
        create_table(ddb, "bench", KEY_SCHEMA, stream=False)
        items = fill_table(ddb, "bench", args.items, seed=1)
        url = f"dynamodb://test:test@{aws.endpoint_url.removeprefix('http://')}/bench"
        for segments in args.segments:
            seconds = scan_only(url, segments)
            rows.append({"target": "scan only", "segments": segments, "load_s": seconds, "verify_s": None})
            print(f"scan only   segments {segments}: {seconds:.2f} s, {items / seconds:,.0f} items/s")
            for name, target_url in urls.items():
                loaded, verified = load_and_verify(url, target_url, segments, args.batch_size)
                rows.append({"target": name, "segments": segments, "load_s": loaded, "verify_s": verified})
                print(
                    f"{name:11} segments {segments}: load {loaded:.2f} s ({items / loaded:,.0f} items/s), "
                    f"verify {verified:.2f} s ({items / verified:,.0f} items/s)"
                )

    load_after = os.getloadavg()[1]
    RESULTS.parent.mkdir(exist_ok=True)
    when = f"{datetime.now(timezone.utc):%Y-%m-%d}"
    meta = {
        "items": items,
        "batch_size": args.batch_size,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": when,
        "load_average_5min": [load_before, load_after],
    }
    RESULTS.with_suffix(".json").write_text(json.dumps({**meta, "runs": rows}, indent=2) + "\n")

    def rate(seconds: float | None) -> str:
        return "" if seconds is None else f"{items / seconds:,.0f}"

    lines = [
        "# Full load benchmark",
        "",
        f"{items:,} items (kcl_relay/localaws/workload.py fill_table, seed 1: every DynamoDB type, ~1 KB each) in",
        "moto's DynamoDB (under hypercorn, on this machine), copied by `fullload.Snapshot` into a fresh table, then",
        "compared by a full `verify` (which must say in sync). `scan only` reads and decodes every page, writing",
        "nothing: the emulator's own cost. moto answers one request at a time and filters a Scan segment by hashing",
        "every item of the table, so more segments add little here; on AWS each segment is read in parallel.",
        f"Machine: {platform.machine()} (2 cores, shared), Python {platform.python_version()}, {when}; "
        f"batch-size {args.batch_size};",
        f"5-minute load average {load_before:.1f} before, {load_after:.1f} after (other jobs share the machine:",
        "single runs, so read the numbers as rough). `python -m benchmarks.full_load`.",
        "",
        "| target | segments | load s | load items/s | verify s | verify items/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {row['target']} | {row['segments']} | {row['load_s']:.2f} | {rate(row['load_s'])} | "
            f"{'' if row['verify_s'] is None else format(row['verify_s'], '.2f')} | {rate(row['verify_s'])} |"
            for row in rows
        ),
        "",
    ]
    RESULTS.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {RESULTS.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
