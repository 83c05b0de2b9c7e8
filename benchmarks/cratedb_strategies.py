"""Benchmark: one CDC corpus into CrateDB, kcl-relay's strategy against the reference strategy, same server, same run.

    python -m benchmarks.cratedb_strategies [--events 10000] [--keys 2000] [--corpus typical|every-shape]
                                            [--reference-events N]

* kcl-relay: the file replay through the relay's pipeline (decode, coalesce per key, guarded bulk statements,
  real-time Gets, no REFRESH), at batch-size 100 (the default) and 1,000.
* reference: what cratedb-toolkit's DynamoDB CDC relay does per event: commons-codec's DynamoDBCDCTranslator turns
  the record into one SQL statement, which is executed, followed by REFRESH TABLE.

Both end states are compared with the reference state (tests/support/reference.py: the newest event per key wins);
the table says how many keys each got wrong. CrateDB is started from the release tarball for the run
(tests/support/cratedb.py), or CRATEDB_SQLALCHEMY_URL names one. Needs the `bench` extra (commons-codec).
Writes benchmarks/results/cratedb_strategies.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.relay import replay_file
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.source.url import parse_source
from tests.support.corpus import KEY_TYPES, make_corpus, typical_attributes, write_ndjson
from tests.support.cratedb import find_tarball, running_cratedb
from tests.support.reference import reference_state
from tests.support.tables import read_items, same_value

RESULTS = Path(__file__).parent / "results" / "cratedb_strategies"


@contextlib.contextmanager
def cratedb() -> Iterator[tuple[str, int | None]]:
    """(URL, pid of the server or None when it is not ours)."""
    if os.environ.get("CRATEDB_SQLALCHEMY_URL"):
        yield os.environ["CRATEDB_SQLALCHEMY_URL"], None
        return
    with running_cratedb(find_tarball()) as server:
        assert server.process is not None
        yield server.url(), server.process.pid


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def expected_items(lines: list[str], name: str) -> dict[str, Any]:
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(decode(RawRecord(line.encode(), Position(f"file:{name}", str(number)))))
        except DecodeError:
            continue
    return reference_state(events)


def wrong_keys(spec: TargetSpec, expected: dict[str, Any]) -> int:
    got = read_items(spec, KEY_TYPES)
    missing_or_extra = len(got.keys() ^ expected.keys())
    differ = sum(1 for key in got.keys() & expected.keys() if not same_value(expected[key], got[key]))
    return missing_or_extra + differ


def run_ours(path: Path, url: str, batch_size: int, pid: int | None) -> dict[str, Any]:
    spec = parse_target(url, f"ours_{uuid.uuid4().hex[:8]}")
    source = parse_source(f"kinesis+dynamodb+cdc://{path}?batch-size={batch_size}")
    cpu, started = cpu_seconds(pid), time.perf_counter()
    assert replay_file(source, spec) == 0
    return {"seconds": time.perf_counter() - started, "server_cpu": cpu_seconds(pid) - cpu, "spec": spec}


def run_reference(lines: list[str], url: str, pid: int | None) -> dict[str, Any]:
    """cratedb-toolkit's relay, event by event: translate, execute, REFRESH TABLE."""
    import sqlalchemy as sa
    from commons_codec.transform.dynamodb import DynamoDBCDCTranslator
    from commons_codec.transform.dynamodb_model import PrimaryKeySchema

    spec = parse_target(url, f"ref_{uuid.uuid4().hex[:8]}")
    table = f"{spec.schema}.{spec.table}"
    schema = PrimaryKeySchema()
    for name, kind in KEY_TYPES.items():
        schema.add(name=name, type=kind)
    translator = DynamoDBCDCTranslator(table_name=table, primary_key_schema=schema)
    engine = spec.create_engine()
    failed = 0
    with engine.connect() as connection:
        connection.execute(sa.text(translator.sql_ddl))
        cpu, started = cpu_seconds(pid), time.perf_counter()
        for line in lines:
            try:
                operation = translator.to_sql(json.loads(line))
                connection.execute(sa.text(operation.statement), operation.parameters)
            except Exception:  # the reference relay logs and goes on; so does its benchmark
                failed += 1
            connection.execute(sa.text(f"REFRESH TABLE {translator.table_name}"))
        seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds, "server_cpu": cpu_seconds(pid) - cpu, "spec": spec, "failed_events": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--reference-events", type=int, default=None, help="replay only a prefix for the reference")
    parser.add_argument("--corpus", choices=("typical", "every-shape"), default="typical")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kcl-relay-bench-"))
    shape: dict[str, Any] = {"attributes": typical_attributes, "old_images": False} if args.corpus == "typical" else {}
    path = write_ndjson(work / "corpus.ndjson", make_corpus(args.events, seed=42, n_keys=args.keys, **shape))
    lines = path.read_text().splitlines()
    reference_lines = lines[: args.reference_events or len(lines)]
    prefix = work / "prefix.ndjson"
    prefix.write_text("\n".join(reference_lines) + "\n")
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    with cratedb() as (url, pid):
        version = run_sql(parse_target(url, "x"), "SELECT version['number'] FROM sys.nodes LIMIT 1")[1][0][0]
        for batch_size in (100, 1000):
            runs = [(path, lines)] + ([(prefix, reference_lines)] if args.reference_events else [])
            for corpus, events in runs:
                run = run_ours(corpus, url, batch_size, pid)
                wrong = wrong_keys(run["spec"], expected_items(events, corpus.name))
                rows.append(row(f"kcl-relay, batch-size {batch_size}", len(events), run, wrong))
        run = run_reference(reference_lines, url, pid)
        wrong = wrong_keys(run["spec"], expected_items(reference_lines, prefix.name))
        rows.append(row("reference: one statement + REFRESH TABLE per event", len(reference_lines), run, wrong))
    reference_rate = rows[-1]["events_per_s"]
    for entry in rows:
        entry["ratio"] = entry["events_per_s"] / reference_rate
    write(rows, args, version, load)


def row(strategy: str, events: int, run: dict[str, Any], wrong: int) -> dict[str, Any]:
    entry = {
        "strategy": strategy,
        "events": events,
        "seconds": round(run["seconds"], 2),
        "events_per_s": events / run["seconds"],
        "server_cpu_ms_per_event": 1000 * run["server_cpu"] / events,
        "wrong_keys": wrong,
        "failed_events": run.get("failed_events", 0),
    }
    print(json.dumps(entry))
    return entry


def write(rows: list[dict[str, Any]], args: argparse.Namespace, version: str, load: float) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    meta = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cratedb": version,
        "python": platform.python_version(),
        "load_average_at_start": round(load, 2),
        "events": args.events,
        "keys": args.keys,
        "corpus": args.corpus,
    }
    RESULTS.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# CrateDB: kcl-relay's strategy against the reference strategy",
        "",
        f"{args.events:,} CDC events over {args.keys:,} keys (tests/support/corpus.py, seed 42, corpus {args.corpus}:",
        "duplicates, out-of-order delivery, removes; keys up to 38 digits), into one CrateDB server, one strategy",
        "after the other.",
        "The reference is cratedb-toolkit's relay: commons-codec's DynamoDBCDCTranslator, one statement and a",
        "REFRESH TABLE per event. Wrong keys: rows missing, extra or different from the reference state.",
        f"CrateDB {version}; {meta['machine']}; Python {meta['python']}; {meta['date']}; load average at start "
        f"{load:.2f}. `python -m benchmarks.cratedb_strategies`.",
        "",
        "| strategy | events | s | events/s | x reference | server CPU ms/event | wrong keys | failed events |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['strategy']} | {r['events']:,} | {r['seconds']:.1f} | {r['events_per_s']:,.0f} | "
            f"{r['ratio']:,.0f} | {r['server_cpu_ms_per_event']:.2f} | {r['wrong_keys']:,} | {r['failed_events']:,} |"
            for r in rows
        ),
        "",
    ]
    RESULTS.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {RESULTS}.md")


if __name__ == "__main__":
    main()
