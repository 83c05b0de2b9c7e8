"""Benchmark: decode + layout per record, ours against commons-codec's DynamoDBCDCTranslator.to_sql, side by side.

    pip install -e '.[bench]' && python3 setup.py build_ext --inplace   # commons-codec; the C extension in place
    python -m benchmarks.decode [--records 10000] [--repeat 7]
    python -m benchmarks.decode --profile [--corpus typical]     # where ours spends its time (cProfile)

What each side does per record, both in this one process, one thread (so one core), measured as CPU time:

* ours: the record's bytes -> decode() -> ChangeEvent; then what the SQLite/PostgreSQL sink needs for it: for
  INSERT/MODIFY layout.split() and the dialect's upsert_params() (key_id, data and aux as canonical exact JSON,
  version, order token); for REMOVE the tombstone_params(). Run with the C fast paths (_speedups.c) and without
  (the pure-Python reference), and every record's result is checked equal between the two.
* commons-codec: DynamoDBCDCTranslator("t").to_sql(record) -> SQL text + parameters (Python dicts; the driver
  would still have to encode them). to_sql takes a parsed dict, so it is timed three ways: from the same bytes
  with the stdlib json.loads (what a relay does), from the same bytes with orjson.loads (the parser ours uses
  when the C parser declines), and on dicts parsed beforehand (parsing not counted at all: its best case).

Each run passes every side over the whole corpus, interleaved in chunks of 500 records (ours, theirs, ours,
the table gives medians. Writes benchmarks/results/decode.md and decode.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from kcl_relay.cdc import speedups
from kcl_relay.cdc.decode import decode
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.cdc.layout import split
from kcl_relay.sink.sqlite import SQLiteDialect
from tests.support.corpus import make_corpus, typical_attributes

RESULTS = Path(__file__).parent / "results"
TARGET_RATIO = 3.0
CORPORA: dict[str, tuple[str, dict[str, Any]]] = {
    "typical": (
        "order items as NEW_IMAGE records (tests/support/corpus.py typical_attributes: strings, plain numbers, a "
        "map, a list of maps, a string set; 5% each a 38-digit number, a binary, a number set, a null)",
        {"attributes": typical_attributes, "old_images": False},
    ),
    "every-shape": (
        "the test corpus (tests/support/corpus.py: every DynamoDB type and shape, exponent numbers, trailing "
        "zeros, 40 KB strings, NEW_AND_OLD_IMAGES)",
        {},
    ),
}


@dataclass
class Side:
    name: str
    what: str
    run: Callable[[int], object]  # processes chunk number i of the corpus


def records_of(corpus: str, count: int) -> list[RawRecord]:
    options = CORPORA[corpus][1]
    documents = make_corpus(count, seed=42, n_keys=max(5, count // 5), **options)
    return [
        RawRecord(
            json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(),
            Position("shardId-000000000001", str(49_650_000_000_000_000_000_000_000_000_000_000_000_000_000 + number)),
        )
        for number, document in enumerate(documents)
    ]


def ours(records: list[RawRecord]) -> list[tuple[Any, ...]]:
    """What the SQLite/PostgreSQL sink needs per record (both dialects encode alike)."""
    dialect = SQLiteDialect(None, "t")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = []
    for record in records:
        event = decode(record)
        if event.image is None:
            out.append(dialect.tombstone_params(event, now))
        else:
            out.append(dialect.upsert_params(event, split(event.key, event.image)))
    return out


def decode_and_layout(records: list[RawRecord]) -> list[Any]:
    """decode + layout alone: the event and its Row, no sink parameters (no JSON text)."""
    out: list[Any] = []
    for record in records:
        event = decode(record)
        out.append(event if event.image is None else split(event.key, event.image))
    return out


def with_speedups(
    enabled: bool, chunks: list[list[RawRecord]], work: Callable[[list[RawRecord]], object] = ours
) -> Callable[[int], object]:
    def run(chunk: int) -> object:
        speedups.use(enabled)
        try:
            return work(chunks[chunk])
        finally:
            speedups.use(True)

    return run


def theirs(
    parse: Callable[[bytes], Any] | None, chunks: list[list[RawRecord]], parsed: list[list[Any]]
) -> Callable[[int], object]:
    from commons_codec.transform.dynamodb import DynamoDBCDCTranslator

    translator = DynamoDBCDCTranslator(table_name="t")
    if parse is None:
        return lambda chunk: [translator.to_sql(document) for document in parsed[chunk]]
    return lambda chunk: [translator.to_sql(parse(record.data)) for record in chunks[chunk]]


def measure(corpus: str, count: int, repeat: int, chunk_size: int = 500) -> dict[str, Any]:
    records = records_of(corpus, count)
    sizes = [len(record.data) for record in records]
    if speedups.available is None:
        raise SystemExit("the C extension is not built: python3 setup.py build_ext --inplace")
    speedups.use(False)
    reference = ours(records)
    speedups.use(True)
    if ours(records) != reference:
        raise SystemExit(f"{corpus}: the C path and the pure-Python reference disagree")
    chunks = [records[start : start + chunk_size] for start in range(0, count, chunk_size)]
    parsed = [[json.loads(record.data) for record in chunk] for chunk in chunks]
    sides = [
        Side("ours, C", "bytes -> decode -> split -> upsert/tombstone params (JSON text)", with_speedups(True, chunks)),
        Side(
            "ours, C, no sink params",
            "bytes -> decode -> split (no JSON text, no params)",
            with_speedups(True, chunks, decode_and_layout),
        ),
        Side("ours, pure Python", "the same as ours, C; C paths off (the reference)", with_speedups(False, chunks)),
        Side("commons-codec, json", "bytes -> json.loads -> to_sql", theirs(json.loads, chunks, parsed)),
        Side("commons-codec, orjson", "bytes -> orjson.loads -> to_sql", theirs(orjson.loads, chunks, parsed)),
        Side("commons-codec, dicts", "pre-parsed dict -> to_sql", theirs(None, chunks, parsed)),
    ]
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    loads = [os.getloadavg()[0]]
    for side in sides:  # warm up
        side.run(0)
    for round_ in range(repeat):
        # One run of every side over the whole corpus, interleaved chunk by chunk (and in a rotating order), so
        # that load from other processes falls on all sides alike.
        spent = dict.fromkeys(times, 0.0)
        for chunk in range(len(chunks)):
            for offset in range(len(sides)):
                side = sides[(chunk + round_ + offset) % len(sides)]
                started = time.process_time()
                side.run(chunk)
                spent[side.name] += time.process_time() - started
        for name, seconds in spent.items():
            times[name].append(seconds)
        loads.append(os.getloadavg()[0])
    rates = {name: count / statistics.median(seconds) for name, seconds in times.items()}
    fast, lean = rates["ours, C"], rates["ours, C, no sink params"]
    theirs_names = [side.name for side in sides if side.name.startswith("commons-codec")]
    return {
        "corpus": corpus,
        "description": CORPORA[corpus][0],
        "records": count,
        "bytes_mean": round(statistics.mean(sizes)),
        "bytes_median": round(statistics.median(sizes)),
        "load_average_1min": {"min": min(loads), "max": max(loads)},
        "sides": [
            {
                "name": side.name,
                "does": side.what,
                "records_per_s": round(rates[side.name]),
                "cpu_us_per_record": round(1e6 / rates[side.name], 2),
                "runs_cpu_s": [round(t, 4) for t in times[side.name]],
                "ours_c_ratio": round(fast / rates[side.name], 2),
                "ours_c_no_sink_params_ratio": round(lean / rates[side.name], 2),
            }
            for side in sides
        ],
        "target_met": {name: fast / rates[name] >= TARGET_RATIO for name in theirs_names},
    }


def _names(names: list[str]) -> str:
    return " and ".join(f"`{name}`" for name in names) or "none"


def markdown(results: list[dict[str, Any]], repeat: int) -> str:
    lines = [
        "# Decode benchmark: decode + layout against commons-codec",
        "",
        "`python -m benchmarks.decode` (its docstring says exactly what each side does). CPU time of one thread,",
        f"median of {repeat} interleaved runs. Ratio: records/s of ours (C) over that row's; the last column takes",
        "ours (C) without the sink's parameters (decode + layout alone, no JSON text).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
        f"{platform.python_version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Target: ours (C) >= {TARGET_RATIO:g}x commons-codec on the same records.",
        "",
    ]
    for result in results:
        load = result["load_average_1min"]
        met = [name for name, ok in result["target_met"].items() if ok]
        missed = [name for name, ok in result["target_met"].items() if not ok]
        lines += [
            f"## {result['corpus']}: {result['records']:,} records, mean {result['bytes_mean']} B "
            f"(median {result['bytes_median']} B)",
            "",
            f"{result['description']}. Load average (1 min) during the runs: {load['min']:.1f} to {load['max']:.1f}.",
            "",
            "| side | does per record | records/s | µs/record | ratio | ratio, no sink params |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            *(
                f"| {s['name']} | {s['does']} | {s['records_per_s']:,} | {s['cpu_us_per_record']} | "
                f"{s['ours_c_ratio']:.2f} | {s['ours_c_no_sink_params_ratio']:.2f} |"
                for s in result["sides"]
            ),
            "",
            f"Target >= {TARGET_RATIO:g}x (ratio column) met against: {_names(met)}; not met against: "
            f"{_names(missed)}.",
            "",
        ]
    return "\n".join(lines)


def profile(corpus: str, count: int) -> str:
    """cProfile of ours over the corpus: the functions with the most own time."""
    records = records_of(corpus, count)
    ours(records)  # warm up
    profiler = cProfile.Profile()
    profiler.runcall(ours, records)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(15)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--corpus", choices=sorted(CORPORA), action="append", help="default: all")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for decode.md and decode.json")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of ours instead of timing")
    args = parser.parse_args(argv)
    if args.profile:
        for corpus in args.corpus or ["typical"]:
            print(f"== {corpus}, C paths {'on' if speedups.native else 'off'}\n{profile(corpus, args.records)}")
        return
    results = []
    for corpus in args.corpus or list(CORPORA):
        result = measure(corpus, args.records, args.repeat)
        results.append(result)
        for side in result["sides"]:
            print(f"{corpus:12} {side['name']:24} {side['records_per_s']:>9,}/s  ratio {side['ours_c_ratio']:.2f}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "decode.md").write_text(markdown(results, args.repeat))
    document = {"command": "python -m benchmarks.decode", "repeat": args.repeat, "results": results}
    (args.output / "decode.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output / 'decode.md'} and decode.json")


if __name__ == "__main__":
    main()
