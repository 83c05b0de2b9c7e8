"""Benchmark: replay a 10,000-event CDC file into SQLite and PostgreSQL through the relay's pipeline.

    python -m benchmarks.replay [--events 10000] [--keys 2000] [--repeat 3]

Writes benchmarks/results/replay.md (a table) and checks every run's table against the reference state, so a fast
but wrong run cannot pass as a result. PostgreSQL is started on 127.0.0.1 for the run (tests/support/postgres.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.relay import replay_file
from kcl_relay.sink.target import parse_target
from kcl_relay.source.url import parse_source
from tests.support.corpus import KEY_TYPES, make_corpus, write_ndjson
from tests.support.postgres import running_postgres
from tests.support.reference import reference_state
from tests.support.tables import read_items

RESULTS = Path(__file__).parent / "results" / "replay.md"


def expected_state(path: Path) -> dict:
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        events.append(decode(RawRecord(line.encode(), Position(f"file:{path.name}", str(number)))))
    return reference_state(events)


def run_once(path: Path, target_url: str, batch_size: int) -> float:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    spec = parse_source(f"kinesis+dynamodb+cdc://{path}?batch-size={batch_size}")
    target = parse_target(target_url, table)
    started = time.perf_counter()
    assert replay_file(spec, target) == 0
    elapsed = time.perf_counter() - started
    got = read_items(target, KEY_TYPES)
    want = {key: item for key, item in expected_state(path).items()}
    assert got == want, f"{target.dialect}: the replayed table differs from the reference state"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kcl-relay-bench-"))
    path = write_ndjson(work / "corpus.ndjson", make_corpus(args.events, seed=42, n_keys=args.keys))
    rows = []
    with running_postgres() as server:
        targets = {"SQLite": f"sqlite:///{work / 'bench.db'}", "PostgreSQL": server.create_database("bench")}
        for name, url in targets.items():
            for batch_size in (100, 1000):
                times = [run_once(path, url, batch_size) for _ in range(args.repeat)]
                best, median = min(times), statistics.median(times)
                rows.append((name, batch_size, best, median, args.events / median))
                rate = args.events / median
                print(f"{name:10} batch-size {batch_size:5}: median {median:.2f} s, {rate:,.0f} events/s")

    RESULTS.parent.mkdir(exist_ok=True)
    lines = [
        "# Replay benchmark",
        "",
        f"{args.events:,} CDC events over {args.keys:,} keys (tests/support/corpus.py, seed 42: every DynamoDB type,",
        "duplicates, out-of-order delivery, removes), replayed from an NDJSON file through decode -> coalesce ->",
        "apply, each run into a fresh table, checked equal to the reference state afterwards.",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {datetime.now(timezone.utc):%Y-%m-%d}; "
        f"median of {args.repeat} runs. `python -m benchmarks.replay`.",
        "",
        "| target | batch-size | best s | median s | events/s (median) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {batch} | {best:.2f} | {median:.2f} | {rate:,.0f} |"
            for (name, batch, best, median, rate) in rows
        ),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
