"""Benchmark: one CDC corpus into CrateDB, kcl-relay against what the server can do and against the reference.

    python -m benchmarks.cratedb_strategies [--events 10000] [--keys 2000] [--corpus typical|every-shape]
                                            [--reference-events 1000] [--rounds 2] [--batch-sizes 1000]

Every side runs in the same run on the same server, interleaved round by round (so they share the load), each
into a fresh table, with the load average (`uptime`'s first figure) taken before and after it:

* unguarded apply: the same net writes without any guard (the limit of any apply that trusts stream order): per
  batch, coalesce per key, one bulk INSERT ... ON CONFLICT DO UPDATE of the images, one bulk DELETE by primary key.
  Same decoding, layout and driver as ours, the same table layout.
* plain bulk INSERTs: one row per event of the corpus, each on a key of its own (fresh rows of that shape), in
  bulk requests of batch-size rows: what the server writes when nothing conflicts.
* kcl-relay: the file replay through the relay's pipeline (decode, coalesce per key, guarded bulk statements,
  real-time Gets, no REFRESH), at each batch size, with `delete-mode=soft` beside the default where it exists.
* reference: what cratedb-toolkit's DynamoDB CDC relay does per event: commons-codec's DynamoDBCDCTranslator turns
  the record into one SQL statement, which is executed, followed by REFRESH TABLE (a prefix of the corpus: it is
  slow; its rate does not depend on the corpus' length).

Ours is given as a share of the unguarded apply of the same round and batch size, and as a multiple of the
reference of the same round. End states are compared with the reference state (tests/support/reference.py: the
newest event per key wins); the table says how many keys each got wrong. CrateDB is started from the release
tarball for the run (tests/support/cratedb.py), or CRATEDB_SQLALCHEMY_URL names one. Needs the `bench` extra
(commons-codec). Writes benchmarks/results/cratedb_strategies.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kcl_relay.cdc.batch import coalesce
from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import ChangeEvent, Position, RawRecord
from kcl_relay.cdc.layout import split
from kcl_relay.relay import replay_file
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.cratedb import CrateDBDialect
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.sink.writer import TableWriter
from kcl_relay.source.url import parse_source
from tests.support.corpus import KEY_TYPES, make_corpus, typical_attributes, write_ndjson
from tests.support.cratedb import find_tarball, running_cratedb
from tests.support.reference import reference_state
from tests.support.tables import read_items, same_value

RESULTS = Path(__file__).parent / "results" / "cratedb_strategies"
NOTES = "<!-- notes: kept by the benchmark when it rewrites the tables above -->"


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


def load() -> float:
    return round(os.getloadavg()[0], 2)


def decoded(lines: list[str], name: str) -> list[ChangeEvent]:
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(decode(RawRecord(line.encode(), Position(f"file:{name}", str(number)))))
        except DecodeError:
            continue
    return events


def expected_items(lines: list[str], name: str) -> dict[str, Any]:
    return reference_state(decoded(lines, name))


def wrong_keys(spec: TargetSpec, expected: dict[str, Any], ours: bool) -> int:
    got = read_items(spec, KEY_TYPES, live_only=ours)  # soft-removed rows are not items
    missing_or_extra = len(got.keys() ^ expected.keys())
    differ = sum(1 for key in got.keys() & expected.keys() if not same_value(expected[key], got[key]))
    return missing_or_extra + differ


def drop(spec: TargetSpec) -> None:
    """A shared CrateDB holds 1,000 shards in all: every side's tables go once it has been checked."""
    dialect = CrateDBDialect(spec.schema, spec.table)
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        run_sql(spec, f"DROP TABLE IF EXISTS {dialect.relation(suffix)}")


def timed(pid: int | None, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before, cpu, started, epoch_ms = load(), cpu_seconds(pid), time.perf_counter(), int(time.time() * 1000)
    out = work()
    out.update(seconds=time.perf_counter() - started, server_cpu=cpu_seconds(pid) - cpu, load=(before, load()))
    out["profile"] = profile(out["spec"], epoch_ms)
    return out


def statement_kind(sql: str) -> str:
    head = " ".join(sql.split())[:200]
    if head.startswith("SELECT key_id"):
        return "tombstone Get"
    if head.startswith("SELECT pk["):
        return "row state Get"
    if head.startswith("INSERT") and "__tombstones" in head:
        return "tombstone upsert"
    if head.startswith("INSERT") and "__deadletters" in head:
        return "dead letters"
    if head.startswith("INSERT"):
        return "upsert" if "ON CONFLICT" in sql else "insert"
    if head.startswith("DELETE"):
        return "delete"
    if head.startswith("REFRESH"):
        return "refresh"
    if head.startswith(("CREATE", "SELECT column_name", "SELECT value")) or "__relay" in head:
        return "setup"
    return head.split(" ")[0].lower()


def profile(spec: TargetSpec, since_ms: int) -> dict[str, list[float]]:
    """sys.jobs_log of the side's statements (those naming its table): kind -> [statements, server ms]. The log
    keeps the last 10,000 jobs of the node by default; a shared server's other clients can push some out."""
    time.sleep(0.2)  # a job is logged when it ends
    sql = (
        "SELECT stmt, ended::BIGINT - started::BIGINT FROM sys.jobs_log "
        f"WHERE started >= {since_ms} AND stmt LIKE '%{spec.table}%' LIMIT 100000"
    )
    kinds: dict[str, list[float]] = {}
    for stmt, ms in run_sql(spec, sql)[1]:
        entry = kinds.setdefault(statement_kind(stmt), [0, 0.0])
        entry[0] += 1
        entry[1] += float(ms)
    return kinds


def run_ours(path: Path, url: str, batch_size: int, pid: int | None, options: str = "") -> dict[str, Any]:
    spec = parse_target(url, f"ours_{uuid.uuid4().hex[:8]}")
    source = parse_source(f"kinesis+dynamodb+cdc://{path}?batch-size={batch_size}{options}")

    # The tables first, as the unguarded apply's are: the CREATE TABLEs (a cluster state update each) are not the
    # apply's cost, and under load they took seconds.
    soft = {"delete_mode": "soft"} if "delete-mode=soft" in options else {}
    writer = TableWriter(spec, **soft)
    writer.ensure_table(KEY_TYPES)
    writer.close()

    def work() -> dict[str, Any]:
        assert replay_file(source, spec) == 0
        return {"spec": spec}

    return timed(pid, work)


BASELINE_SCRIPT = """
import sys, time
from kcl_relay.relay import replay_file
from kcl_relay.sink.target import parse_target
from kcl_relay.sink.writer import TableWriter
from kcl_relay.source.url import parse_source
from tests.support.corpus import KEY_TYPES
url, table, path, size = sys.argv[1:5]
spec = parse_target(url, table)
writer = TableWriter(spec)
writer.ensure_table(KEY_TYPES)
writer.close()
source = parse_source(f"kinesis+dynamodb+cdc://{path}?batch-size={size}")
started = time.perf_counter()
assert replay_file(source, spec) == 0
print(time.perf_counter() - started)
"""


def run_baseline(tree: Path, path: Path, url: str, batch_size: int, pid: int | None) -> dict[str, Any]:
    """The same replay with the relay's code of another checkout (`git archive COMMIT | tar -x -C DIR`), in a
    process of its own; the time is taken inside it, around the replay alone, as run_ours() does."""
    spec = parse_target(url, f"base_{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", BASELINE_SCRIPT, url, spec.table, str(path), str(batch_size)]

    def work() -> dict[str, Any]:
        done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
        return {"spec": spec, "inner_seconds": float(done.stdout.strip().splitlines()[-1])}

    out = timed(pid, work)
    out["seconds"] = out["inner_seconds"]
    return out


class Direct:
    """The crate driver on one connection, the relay's table layout and parameters, no guard, no read."""

    def __init__(self, url: str, prefix: str) -> None:
        from crate import client

        self.spec = parse_target(url, f"{prefix}_{uuid.uuid4().hex[:8]}")
        self.dialect = CrateDBDialect(self.spec.schema, self.spec.table)
        host = f"http://{self.spec.url.host}:{self.spec.url.port}"
        self.connection = client.connect(host, username=self.spec.url.username, password=self.spec.url.password)
        self.cursor = self.connection.cursor()
        for statement in self.dialect.create_tables(KEY_TYPES):
            self.cursor.execute(statement)
        names = sorted(KEY_TYPES)
        relation, columns = self.dialect.relation(), "pk, data, aux, cdc_version, cdc_order, cdc_event"
        conflict = ", ".join(f"pk['{name}']" for name in names)
        updates = ", ".join(f"{c} = excluded.{c}" for c in ("data", "aux", "cdc_version", "cdc_order", "cdc_event"))
        self.insert = f"INSERT INTO {relation} ({columns}) VALUES (?, ?, ?, ?, ?, ?)"
        self.upsert = f"{self.insert} ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        self.delete = f"DELETE FROM {relation} WHERE " + " AND ".join(f"pk['{name}'] = ?" for name in names)
        self.failed = 0

    def bulk(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.failed += sum(1 for result in self.cursor.executemany(sql, rows) if result.get("rowcount", -2) < 0)

    def params(self, event: ChangeEvent) -> tuple[Any, ...]:
        assert event.image is not None
        return self.dialect.upsert_params(event, split(event.key, event.image))

    def close(self) -> None:
        self.connection.close()


def run_unguarded(lines: list[str], name: str, url: str, batch_size: int, pid: int | None) -> dict[str, Any]:
    """Per batch: decode, coalesce per key, one bulk upsert of the images, one bulk DELETE by key; no guard."""
    direct = Direct(url, "unguarded")

    def work() -> dict[str, Any]:
        for start in range(0, len(lines), batch_size):
            events = coalesce(decoded(lines[start : start + batch_size], name))
            direct.bulk(direct.upsert, [direct.params(e) for e in events if e.op != "REMOVE"])
            direct.bulk(direct.delete, [direct.dialect.key_params(e) for e in events if e.op == "REMOVE"])
        return {"spec": direct.spec, "failed_events": direct.failed}

    try:
        return timed(pid, work)
    finally:
        direct.close()


def run_inserts(lines: list[str], name: str, url: str, batch_size: int, pid: int | None) -> dict[str, Any]:
    """Every event's image (a REMOVE: its key alone) as a fresh row on a key of its own, in plain bulk INSERTs."""
    direct = Direct(url, "inserts")
    events = decoded(lines, name)

    def fresh(event: ChangeEvent, number: int) -> tuple[Any, ...]:
        key = {**event.key, "id": number}
        return direct.dialect.upsert_params(event, split(key, {**(event.image or {}), **key}))

    def work() -> dict[str, Any]:
        for start in range(0, len(events), batch_size):
            part = events[start : start + batch_size]
            direct.bulk(direct.insert, [fresh(e, start + i) for i, e in enumerate(part)])
        return {"spec": direct.spec, "failed_events": direct.failed, "events": len(events)}

    try:
        return timed(pid, work)
    finally:
        direct.close()


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

        def work() -> dict[str, Any]:
            nonlocal failed
            for line in lines:
                try:
                    operation = translator.to_sql(json.loads(line))
                    connection.execute(sa.text(operation.statement), operation.parameters)
                except Exception:  # the reference relay logs and goes on; so does its benchmark
                    failed += 1
                connection.execute(sa.text(f"REFRESH TABLE {translator.table_name}"))
            return {"spec": spec, "failed_events": failed}

        out = timed(pid, work)
    engine.dispose()
    return out


def soft_mode_available() -> bool:
    from kcl_relay.source.url import OPTIONS

    return "delete-mode" in OPTIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--reference-events", type=int, default=1_000, help="the reference replays this prefix")
    parser.add_argument("--corpus", choices=("typical", "every-shape"), default="typical")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every side, interleaved")
    parser.add_argument("--batch-sizes", default="1000", help="comma-separated batch sizes of ours and unguarded")
    parser.add_argument("--soft", action=argparse.BooleanOptionalAction, default=None, help="delete-mode=soft too")
    parser.add_argument("--baseline", type=Path, default=None, help="an older checkout of the relay, run beside")
    parser.add_argument("--baseline-name", default="before", help="what the baseline is, for the table")
    parser.add_argument("--only", default="", help="run only the sides whose name contains this (while developing)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kcl-relay-bench-"))
    shape: dict[str, Any] = {"attributes": typical_attributes, "old_images": False} if args.corpus == "typical" else {}
    path = write_ndjson(work / "corpus.ndjson", make_corpus(args.events, seed=42, n_keys=args.keys, **shape))
    lines = path.read_text().splitlines()
    reference_lines = lines[: min(args.reference_events, len(lines))]
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    soft = soft_mode_available() if args.soft is None else args.soft
    expected = expected_items(lines, path.name)
    expected_prefix = expected_items(reference_lines, path.name)
    rows: list[dict[str, Any]] = []
    with cratedb() as (url, pid):
        version = run_sql(parse_target(url, "x"), "SELECT version['number'] FROM sys.nodes LIMIT 1")[1][0][0]
        for number in range(1, args.rounds + 1):
            sides: list[tuple[str, int | None, Callable[[], dict[str, Any]], dict[str, Any] | None]] = []
            for size in batch_sizes:
                sides.append(
                    ("unguarded apply", size, lambda s=size: run_unguarded(lines, path.name, url, s, pid), expected)
                )
                sides.append(("kcl-relay", size, lambda s=size: run_ours(path, url, s, pid), expected))
                if args.baseline:
                    run = lambda s=size: run_baseline(args.baseline, path, url, s, pid)  # noqa: E731
                    sides.append((f"kcl-relay {args.baseline_name}", size, run, expected))
                if soft:
                    run = lambda s=size: run_ours(path, url, s, pid, "&delete-mode=soft")  # noqa: E731
                    sides.append(("kcl-relay, delete-mode=soft", size, run, expected))
            sides.append(
                (
                    "plain bulk INSERTs",
                    batch_sizes[-1],
                    lambda: run_inserts(lines, path.name, url, batch_sizes[-1], pid),
                    None,
                )
            )
            sides.append(
                (
                    "reference: statement + REFRESH TABLE per event",
                    None,
                    lambda: run_reference(reference_lines, url, pid),
                    expected_prefix,
                )
            )
            for strategy, size, side, want in [entry for entry in sides if args.only in entry[0]]:
                run = side()
                events = run.get("events", len(reference_lines) if want is expected_prefix else len(lines))
                wrong = None if want is None else wrong_keys(run["spec"], want, not strategy.startswith("reference"))
                drop(run["spec"])
                rows.append(row(number, strategy, size, events, run, wrong))
    summarise(rows)
    write(rows, args, version)


def row(number: int, strategy: str, size: int | None, events: int, run: dict[str, Any], wrong: int | None) -> dict:
    entry = {
        "round": number,
        "strategy": strategy,
        "batch_size": size,
        "events": events,
        "seconds": round(run["seconds"], 2),
        "events_per_s": events / run["seconds"],
        "server_cpu_ms_per_event": 1000 * run["server_cpu"] / events,
        "load_before": run["load"][0],
        "load_after": run["load"][1],
        "wrong_keys": wrong,
        "failed_events": run.get("failed_events", 0),
        "profile": run.get("profile", {}),
    }
    print(json.dumps(entry), flush=True)
    return entry


def summarise(rows: list[dict[str, Any]]) -> None:
    """Ours as a share of the unguarded apply (same round, same batch size) and a multiple of the reference (same
    round)."""
    for entry in rows:
        same_round = [r for r in rows if r["round"] == entry["round"]]
        unguarded = [
            r for r in same_round if r["strategy"] == "unguarded apply" and r["batch_size"] == entry["batch_size"]
        ]
        reference = [r for r in same_round if r["strategy"].startswith("reference")]
        entry["share_of_unguarded"] = entry["events_per_s"] / unguarded[0]["events_per_s"] if unguarded else None
        entry["x_reference"] = entry["events_per_s"] / reference[0]["events_per_s"] if reference else None


def fmt(value: float | None, pattern: str) -> str:
    return "" if value is None or value != value else format(value, pattern)


def write(rows: list[dict[str, Any]], args: argparse.Namespace, version: str) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    meta = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cratedb": version,
        "python": platform.python_version(),
        "events": args.events,
        "keys": args.keys,
        "reference_events": args.reference_events,
        "corpus": args.corpus,
        "rounds": args.rounds,
    }
    RESULTS.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    ours = [r for r in rows if r["strategy"].startswith("kcl-relay")]
    summary = []
    for strategy, size in sorted({(r["strategy"], r["batch_size"]) for r in ours}):
        same = [r for r in ours if (r["strategy"], r["batch_size"]) == (strategy, size)]
        shares = [r["share_of_unguarded"] for r in same if r["share_of_unguarded"] is not None]
        multiples = [r["x_reference"] for r in same if r["x_reference"] is not None]
        summary.append(
            f"| {strategy}, batch-size {size} | {statistics.median(r['events_per_s'] for r in same):,.0f} | "
            f"{fmt(statistics.median(shares) * 100 if shares else None, '.0f')}{' %' if shares else ''} | "
            f"{fmt(statistics.median(multiples) if multiples else None, ',.0f')} |"
        )
    lines = [
        "# CrateDB: kcl-relay's strategy against the server's limits and the reference strategy",
        "",
        f"{args.events:,} CDC events over {args.keys:,} keys (tests/support/corpus.py, seed 42, corpus {args.corpus}:",
        "duplicates, out-of-order delivery, removes; keys up to 38 digits), into one CrateDB server; every side in",
        f"each of {args.rounds} rounds, interleaved, each into a fresh table. The reference (cratedb-toolkit's relay:",
        "commons-codec's DynamoDBCDCTranslator, one statement and a REFRESH TABLE per event) replays the first",
        f"{args.reference_events:,} events. Wrong keys: rows missing, extra or different from the reference state (the",
        "unguarded apply trusts delivery order, which this corpus breaks). Load: the 1-minute load average before and",
        f"after each side. CrateDB {version}; {meta['machine']}; Python {meta['python']}; {meta['date']}.",
        "`python -m benchmarks.cratedb_strategies`.",
        "",
        "| ours (median of rounds) | events/s | share of the unguarded apply | x reference |",
        "| --- | ---: | ---: | ---: |",
        *summary,
        "",
        "| round | strategy | batch | events | s | events/s | share of unguarded | x ref. | load before-after | "
        "wrong keys | failed |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        *(
            f"| {r['round']} | {r['strategy']} | {r['batch_size'] or ''} | {r['events']:,} | {r['seconds']:.1f} | "
            f"{r['events_per_s']:,.0f} | {fmt(r['share_of_unguarded'] and r['share_of_unguarded'] * 100, '.0f')} "
            f"{'%' if r['share_of_unguarded'] else ''} | {fmt(r['x_reference'], ',.1f')} | "
            f"{r['load_before']:.2f}-{r['load_after']:.2f} | {'' if r['wrong_keys'] is None else r['wrong_keys']} | "
            f"{r['failed_events']:,} |"
            for r in rows
        ),
        "",
        "Server time per statement kind (sys.jobs_log: statements naming the side's table, summed over the run;",
        "statements of one batch may overlap), per 1,000 events:",
        "",
        "| round | strategy | batch | kind | statements | server ms |",
        "| ---: | --- | ---: | --- | ---: | ---: |",
        *(
            f"| {r['round']} | {r['strategy']} | {r['batch_size'] or ''} | {kind} | "
            f"{count * 1000 / r['events']:,.1f} | {ms * 1000 / r['events']:,.0f} |"
            for r in rows
            if not r["strategy"].startswith("reference")
            for kind, (count, ms) in sorted(r["profile"].items(), key=lambda item: -item[1][1])
        ),
        "",
    ]
    # What was written by hand below the marker (the analysis of the levers) is kept across runs.
    old = RESULTS.with_suffix(".md").read_text() if RESULTS.with_suffix(".md").exists() else ""
    notes = old[old.index(NOTES) :] if NOTES in old else NOTES + "\n"
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n" + notes)
    print(f"wrote {RESULTS}.md")


if __name__ == "__main__":
    main()
