"""Benchmark: records/s through the whole relay (emulated Kinesis -> KCL MultiLangDaemon -> processor -> SQLite).

    python -m benchmarks.kcl_throughput [--records 20000] [--shards 2] [--batch-sizes 100,1000,10000]

Writes benchmarks/results/kcl_throughput.md. The rate is the relay's own figure: records read from the first
applied record to the last (the KCL's start-up on a fresh lease table, up to a minute, is reported apart).
Every run is checked: the table must hold every key afterwards.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import app_name, ids_in, run_relay, source_url
from tests.support.records import cdc_record

RESULTS = Path(__file__).parent / "results" / "kcl_throughput.md"
T0 = 1_795_000_000_000_000


def put_many(kinesis: object, stream: str, count: int) -> None:
    for start in range(0, count, 500):
        entries = []
        for i in range(start, min(start + 500, count)):
            record = cdc_record("INSERT", f"k{i:07d}", T0 + i, payload="x" * 200)
            entries.append({"Data": json.dumps(record).encode(), "PartitionKey": f"k{i:07d}"})
        failed = kinesis.put_records(StreamName=stream, Records=entries)["FailedRecordCount"]  # type: ignore[attr-defined]
        assert failed == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch-sizes", default="100,1000,10000")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kcl-relay-bench-"))
    rows = []
    with LocalAws() as aws:
        kinesis = aws.client("kinesis")
        stream = "bench-cdc"
        kinesis.create_stream(StreamName=stream, ShardCount=args.shards)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
        put_many(kinesis, stream, args.records)
        for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
            target = f"sqlite:///{work / f'bench-{batch_size}.db'}"
            url = source_url(aws.endpoint_url, stream, once="true", app=app_name(), batch_size=str(batch_size))
            done = run_relay(url, target, "bench", timeout=1800)
            assert done.returncode == 0, done.stderr[-2000:]
            assert len(ids_in(target, "bench")) == args.records
            first = float(re.search(r"first records applied ([\d.]+) s", done.stderr).group(1))  # type: ignore[union-attr]
            rate = int(re.search(r"; (\d+) records/s from the first", done.stderr).group(1))  # type: ignore[union-attr]
            rows.append((batch_size, first, rate))
            print(f"batch-size {batch_size:6}: first record after {first:.1f} s, {rate:,} records/s")

    RESULTS.parent.mkdir(exist_ok=True)
    lines = [
        "# Relay throughput through the KCL",
        "",
        f"{args.records:,} CDC records (~400 B, distinct keys) in a {args.shards}-shard stream on the local emulators",
        "(moto under hypercorn), relayed by `kcl-relay load table ...?once=true` into SQLite through the real KCL",
        "MultiLangDaemon (KCL 3.1.3), idle-sleep 0.2 s, buffer-time 0.5 s. Records/s as the relay reports it: from",
        "the first applied record to the last. Start: seconds until the first applied record on a fresh lease table.",
        f"Machine: {platform.machine()}, 2 cores, {datetime.now(timezone.utc):%Y-%m-%d}. "
        "`python -m benchmarks.kcl_throughput`.",
        "",
        "| batch-size | start s | records/s |",
        "| ---: | ---: | ---: |",
        *(f"| {batch} | {first:.1f} | {rate:,} |" for batch, first, rate in rows),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
