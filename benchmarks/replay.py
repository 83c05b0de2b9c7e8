"""Benchmark: replay a file of CDC records into SQLite and PostgreSQL through the relay's pipeline.

    python -m benchmarks.replay [--events 10000] [--keys 2000] [--repeat 5] [--corpus typical|every-shape]

Each run replays the file (`kcl-relay load table` on an NDJSON file: read -> decode -> coalesce -> apply, one
transaction per batch) into a fresh table, and checks the table against the reference state afterwards, so a fast
but wrong run cannot pass as a result. PostgreSQL is started on 127.0.0.1 for the run (tests/support/postgres.py)
and counts as its own process: events/s is wall-clock time; the relay process's own CPU time is given beside it.
Writes benchmarks/results/replay.md and replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kcl_relay.cdc import speedups
from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.relay import replay_file
from kcl_relay.sink.target import parse_target
from kcl_relay.source.url import parse_source
from tests.support.corpus import KEY_TYPES, make_corpus, typical_attributes, write_ndjson
from tests.support.postgres import running_postgres
from tests.support.reference import reference_state
from tests.support.tables import read_items

RESULTS = Path(__file__).parent / "results"
TARGETS = {"SQLite": 20_000, "PostgreSQL": 10_000}  # events/s at batch-size 1000, ~600 B records
CORPORA: dict[str, tuple[str, dict[str, Any]]] = {
    "typical": (
        "order items as NEW_IMAGE records (tests/support/corpus.py typical_attributes)",
        {"attributes": typical_attributes, "old_images": False},
    ),
    "every-shape": ("the test corpus: every DynamoDB type and shape, NEW_AND_OLD_IMAGES", {}),
}


def expected_state(path: Path) -> dict:
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        events.append(decode(RawRecord(line.encode(), Position(f"file:{path.name}", str(number)))))
    return reference_state(events)


def run_once(path: Path, target_url: str, batch_size: int, want: dict) -> tuple[float, float]:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    spec = parse_source(f"kinesis+dynamodb+cdc://{path}?batch-size={batch_size}")
    target = parse_target(target_url, table)
    started, cpu = time.perf_counter(), time.process_time()
    assert replay_file(spec, target) == 0
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    got = read_items(target, KEY_TYPES)
    assert got == want, f"{target.dialect}: the replayed table differs from the reference state"
    return elapsed, cpu


def _verdicts(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        target = TARGETS.get(row["target"])
        if row["corpus"] == "typical" and row["batch_size"] == 1000 and target is not None:
            met = "met" if row["events_per_s"] >= target else "not met"
            lines.append(f"- {row['target']}: {row['events_per_s']:,} events/s (median), target {target:,}: {met}.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--corpus", choices=sorted(CORPORA), action="append", help="default: all")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for replay.md and replay.json")
    args = parser.parse_args(argv)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="kcl-relay-bench-"))
    rows: list[dict[str, Any]] = []
    with running_postgres() as server:
        targets = {"SQLite": f"sqlite:///{work / 'bench.db'}", "PostgreSQL": server.create_database("bench")}
        for corpus in args.corpus or list(CORPORA):
            options = CORPORA[corpus][1]
            records = make_corpus(args.events, 42, n_keys=args.keys, **options)
            path = write_ndjson(work / f"{corpus}.ndjson", records, compact=True)
            sizes = [len(line) for line in path.read_bytes().splitlines()]
            want = expected_state(path)
            for name, url in targets.items():
                for batch_size in batch_sizes:
                    runs, loads = [], [os.getloadavg()[0]]
                    for _ in range(args.repeat):
                        runs.append(run_once(path, url, batch_size, want))
                        loads.append(os.getloadavg()[0])
                    wall = statistics.median(elapsed for elapsed, _ in runs)
                    cpu = statistics.median(cpu for _, cpu in runs)
                    row = {
                        "corpus": corpus,
                        "bytes_mean": round(statistics.mean(sizes)),
                        "target": name,
                        "batch_size": batch_size,
                        "events_per_s": round(args.events / wall),
                        "best_events_per_s": round(args.events / min(elapsed for elapsed, _ in runs)),
                        "relay_cpu_events_per_s": round(args.events / cpu),
                        "runs_s": [round(elapsed, 3) for elapsed, _ in runs],
                        "load_average_1min": {"min": min(loads), "max": max(loads)},
                    }
                    rows.append(row)
                    print(
                        f"{corpus:12} {name:10} batch-size {batch_size:5}: {row['events_per_s']:>7,} events/s "
                        f"(relay CPU {row['relay_cpu_events_per_s']:,}/s, load {min(loads):.1f}-{max(loads):.1f})"
                    )

    args.output.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Replay benchmark",
        "",
        f"`python -m benchmarks.replay`: {args.events:,} CDC events over {args.keys:,} keys (duplicates, out-of-order",
        "delivery, removes, TTL expiries), replayed from an NDJSON file through decode -> coalesce -> apply, each run",
        "into a fresh table, checked equal to the reference state afterwards. events/s: wall clock, median of",
        f"{args.repeat} runs (PostgreSQL's server works in its own processes); relay CPU: the relay process alone.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
        f"{platform.python_version()}, C extension {'on' if speedups.native else 'off'}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "Targets at batch-size 1000, ~600 B records (typical): "
        + ", ".join(f"{name} >= {rate:,} events/s" for name, rate in TARGETS.items())
        + ".",
        "",
        *_verdicts(rows),
        "",
        "| corpus (mean size) | target | batch-size | events/s (median) | best | relay CPU events/s | load (1 min) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        *(
            f"| {r['corpus']} ({r['bytes_mean']} B) | {r['target']} | {r['batch_size']} | {r['events_per_s']:,} | "
            f"{r['best_events_per_s']:,} | {r['relay_cpu_events_per_s']:,} | "
            f"{r['load_average_1min']['min']:.1f}-{r['load_average_1min']['max']:.1f} |"
            for r in rows
        ),
        "",
    ]
    (args.output / "replay.md").write_text("\n".join(lines))
    document = {"command": "python -m benchmarks.replay", "events": args.events, "keys": args.keys, "rows": rows}
    (args.output / "replay.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output / 'replay.md'} and replay.json")


if __name__ == "__main__":
    main()
