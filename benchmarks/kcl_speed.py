"""Benchmark: is the relay ever the bottleneck? Start-up, throughput, latency, memory and scaling through the real KCL.

    python -m benchmarks.kcl_speed                      # everything, ~20 minutes on 2 cores
    python -m benchmarks.kcl_speed --only start,latency # some scenarios
    python -m benchmarks.kcl_speed --smoke --out DIR    # a tiny run of every scenario (CI: the harness works)

Writes benchmarks/results/kcl_speed.md and .json (or into --out). Every figure comes from `kcl-relay load table` run as
a user runs it, at the default options unless a row says otherwise, against the local emulators (moto under
hypercorn) and a SQLite target (the embedded default). "seed" rows run the same code with the seed's KCL settings
(benchmarks/kcl_seed.py), in the same run, so their ratios share the machine's state. Each scenario records the CPU
seconds of every process (emulator, JVM, processors, supervisor, the benchmark's own writer) and peak RSS, from /proc,
and the machine's load average before and after: the cores are shared, figures are noisy.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.kcl_harness import (
    RateWriter,
    Relay,
    Usage,
    UsageSampler,
    VisibilityProbe,
    app_name,
    emulators,
    entries,
    machine,
    new_stream,
    percentile,
    put_backlog,
    source_url,
)
from kcl_relay.localaws.server import LocalAws
from tests.support.postgres import running_postgres

RESULTS = Path(__file__).parent / "results"
NOW, SEED = "kcl_relay", "benchmarks.kcl_seed"
VARIANT_NAMES = {NOW: "now", SEED: "seed"}


@dataclass
class Sizes:
    """How big each scenario is: the full run, or a smoke run that only shows the harness works."""

    start_repeats: int = 3
    backlog_records: int = 50_000
    backlog_repeats: int = 3
    seed_backlog_records: int = 5_000
    sustained_rate: int = 2_000
    sustained_seconds: float = 30.0
    latency_rate: int = 200
    latency_seconds: float = 30.0
    memory_records: int = 50_000
    scaling_records: int = 40_000
    scaling_shards: tuple[int, ...] = (1, 2, 4)
    scaling_workers: tuple[int, ...] = (1, 2)
    component_records: int = 10_000
    restart_repeats: int = 3
    restart_rate: int = 500  # records/s put while a worker stops and starts again ("under load")
    with_seed: bool = True
    # fan-out: put rate and seconds of the latency runs, backlog records (kinesis-mock needs ~3 ms per record read:
    # a 5,000-record GetRecords outlasted the KCL client's connection)
    fanout: tuple[int, float, int] = (200, 20.0, 1_500)

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            start_repeats=1,
            backlog_records=500,
            backlog_repeats=1,
            sustained_rate=100,
            sustained_seconds=3.0,
            latency_rate=50,
            latency_seconds=3.0,
            memory_records=500,
            scaling_records=400,
            scaling_shards=(2,),
            scaling_workers=(1,),
            component_records=200,
            restart_repeats=1,
            restart_rate=50,
            with_seed=False,
            fanout=(20, 2.0, 200),
        )


class Bench:
    """One run: the emulators, a folder for targets and logs, and the results gathered so far."""

    def __init__(self, aws: LocalAws, work: Path, sizes: Sizes) -> None:
        self.aws, self.work, self.sizes = aws, work, sizes
        self.kinesis = aws.client("kinesis")
        self.results: dict[str, Any] = {}
        self.postgres: Any = None  # a PostgresServer once a scenario needs one

    def target(self, name: str) -> tuple[str, Path]:
        path = self.work / f"{name}-{time.monotonic_ns()}.db"
        return f"sqlite:///{path}", path

    def postgres_target(self, name: str) -> str:
        if self.postgres is None:
            self._postgres_context = running_postgres()
            self.postgres = self._postgres_context.__enter__()
        return self.postgres.create_database(re.sub(r"[^a-z0-9]", "_", f"{name}_{time.monotonic_ns()}".lower()))

    def close(self) -> None:
        if self.postgres is not None:
            self._postgres_context.__exit__(None, None, None)
            self.postgres = None

    def relay(
        self,
        stream: str,
        name: str,
        module: str = NOW,
        app: str | None = None,
        target: str | None = None,
        **options: Any,
    ) -> Relay:
        # The KCL's info lines time its deliveries (kcl_log_times); the runs before log-level existed logged at info.
        options.setdefault("log_level", "info")
        url = source_url(self.aws.endpoint_url, stream, app=app or app_name(), **options)
        target = target or self.target(name)[0]
        return Relay(url, target, "bench", self.work / f"{name}-{time.monotonic_ns()}.log", module=module)

    def sampler(self, *relays: Relay) -> UsageSampler:
        assert self.aws.pid is not None
        roots = [self.aws.pid] + [relay.process.pid for relay in relays if relay.process is not None]
        sampler = UsageSampler(roots)
        sampler.start()
        return sampler


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# ---- 2. start-up --------------------------------------------------------------------------------------------------


def scenario_start(bench: Bench) -> dict[str, Any]:
    """Seconds from `kcl-relay load table` to the first record in the target: a fresh lease table, then a restart."""
    rows: dict[str, dict[str, list[float]]] = {}
    variants = [NOW, SEED] if bench.sizes.with_seed else [NOW]
    for repeat in range(bench.sizes.start_repeats):
        for module in variants:
            if module == SEED and repeat > 0:
                continue  # the seed waits a random 1-30 s: one sample says enough, it costs a minute each
            stream = new_stream(bench.aws, 1)
            put_backlog(bench.kinesis, stream, 10)
            app = app_name("start")
            times = rows.setdefault(VARIANT_NAMES[module], {"fresh": [], "restart": []})
            target, _ = bench.target("start")  # the restart writes where the first run did, as a restart does
            for phase in ("fresh", "restart"):
                relay = bench.relay(stream, f"start-{phase}", module=module, app=app, target=target).start()
                try:
                    seconds = relay.wait_first_record(timeout=180)
                finally:
                    code = relay.stop()
                times[phase].append(round(seconds, 2))
                say(f"start {VARIANT_NAMES[module]} {phase}: first record {seconds:.1f} s after start (exit {code})")
                if phase == "fresh":
                    put_backlog(bench.kinesis, stream, 10, run=f"r{repeat}")  # something new for the restart
    # With a worker-id of its own, a restarted worker finds its leases at once (a lone worker keeps them).
    times = rows.setdefault("now, worker-id set", {"fresh": [], "restart": []})
    for repeat in range(bench.sizes.start_repeats):
        stream = new_stream(bench.aws, 1)
        put_backlog(bench.kinesis, stream, 10)
        app, worker = app_name("start"), f"bench-worker-{repeat}"
        target, _ = bench.target("start-id")
        for phase in ("fresh", "restart"):
            relay = bench.relay(stream, f"start-id-{phase}", app=app, target=target, worker_id=worker).start()
            try:
                seconds = relay.wait_first_record(timeout=180)
            finally:
                relay.stop()
            times[phase].append(round(seconds, 2))
            say(f"start now, worker-id set, {phase}: first record {seconds:.1f} s after start")
            if phase == "fresh":
                put_backlog(bench.kinesis, stream, 10, run=f"r{repeat}")
    return rows


# ---- 2b. restart and graceful stop --------------------------------------------------------------------------------

RESTART_SHARDS = 2


def restart_load(rate: int) -> str:
    return (
        f"{rate} records/s of ~450 B (PutRecords) into {RESTART_SHARDS} shards, from before the stop until after the "
        "restart's first record"
        if rate
        else f"idle: 10 records waiting in {RESTART_SHARDS} shards"
    )


def scenario_restart(bench: Bench) -> dict[str, Any]:
    """A lone worker at default options (its stable default id: it keeps its leases at a graceful stop) stopped by
    SIGTERM and started again, idle and under load: seconds from SIGTERM to its exit, and from the restart's spawn to
    its first record in the target. Then once=true: seconds from "every shard is caught up" to the exit."""
    found: dict[str, Any] = {}
    for name, rate in (("idle", 0), ("under_load", bench.sizes.restart_rate)):
        row: dict[str, Any] = {"load": restart_load(rate), "stop_s": [], "restart_first_record_s": [], "exit": []}
        for repeat in range(bench.sizes.restart_repeats):
            stream = new_stream(bench.aws, RESTART_SHARDS)
            put_backlog(bench.kinesis, stream, 10)
            app = app_name("restart")
            target, _ = bench.target("restart")
            first = bench.relay(stream, f"restart-{name}-1", app=app, target=target).start()
            writer: RateWriter | None = None
            try:
                first.wait_first_record(timeout=180)
                if rate:
                    writer = RateWriter(bench.kinesis, stream, rate, 120.0, run=f"load{repeat}")
                    writer.start()
                    floor = first.applied() + rate
                    wait_until(lambda relay=first, floor=floor: relay.applied() > floor, 120, "the load applied first")
                stopping = time.monotonic()
            finally:
                code = first.stop()
            row["stop_s"].append(round(time.monotonic() - stopping, 2))
            if not rate:
                put_backlog(bench.kinesis, stream, 10, run=f"r{repeat}")  # something new for the restart
            second = bench.relay(stream, f"restart-{name}-2", app=app, target=target).start()
            try:
                seconds = second.wait_first_record(timeout=180)
            finally:
                row["exit"].append([code, second.stop()])
                if writer is not None:
                    writer.seconds = 0  # no more writes (a daemon thread: it idles out at its deadline)
            row["restart_first_record_s"].append(round(seconds, 2))
            say(f"restart {name}: stopped in {row['stop_s'][-1]:.1f} s, first record {seconds:.1f} s after restart")
        found[name] = row
    once: list[float] = []
    for _ in range(bench.sizes.restart_repeats):
        stream = new_stream(bench.aws, RESTART_SHARDS)
        put_backlog(bench.kinesis, stream, 10)
        relay = bench.relay(stream, "restart-once", once="true").start()
        wait_until(lambda relay=relay: "every shard is caught up" in relay.stderr, 180, "once=true caught up")
        caught_up = time.monotonic()
        assert relay.process is not None
        relay.process.wait(timeout=120)
        once.append(round(time.monotonic() - caught_up, 2))
        say(f"once=true: exited {once[-1]:.1f} s after every shard was caught up (exit {relay.process.returncode})")
    found["once_stop_s"] = once
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


# ---- 1. throughput ------------------------------------------------------------------------------------------------


def drain(
    bench: Bench,
    name: str,
    records: int,
    shards: int = 1,
    workers: int = 1,
    module: str = NOW,
    env: dict[str, str] | None = None,
    postgres: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """A backlog of `records` (~600 B each) drained by `workers` relays; records/s from first to last commit."""
    stream = new_stream(bench.aws, shards)
    put_seconds = put_backlog(bench.kinesis, stream, records)
    app = app_name("drain")
    relays = [bench.relay(stream, f"{name}-w{i}", module=module, app=app, **options) for i in range(workers)]
    # One target for a fleet: the workers share a table as they would in production.
    target = bench.postgres_target(name) if postgres else relays[0].target
    for relay in relays:
        relay.env = env or {}
        relay.target = target
    for relay in relays:
        relay.start()
    # CPU from the moment the KCL starts reading (its prefetch thread reads ahead while the processor is still being
    # initialized): the drain, not the start-up.
    wait_for_log(relays, PREFETCH_STARTS, timeout=180)
    sampler = bench.sampler(*relays)
    deadline = time.time() + max(600, records / 50)
    try:
        while sum(relay.applied() for relay in relays) < records:
            if time.time() > deadline:
                raise TimeoutError(f"{name}: {sum(r.applied() for r in relays)} of {records} applied")
            for relay in relays:
                if relay.process is not None and relay.process.poll() is not None:
                    raise RuntimeError(f"{name}: relay exited {relay.process.returncode}: {relay.stderr[-2000:]}")
            time.sleep(0.2)
    finally:
        usage = sampler.finish()
        codes = [relay.stop() for relay in relays]
    firsts = [r.first_applied_at() for r in relays if r.first_applied_at()]
    lasts = [r.last_applied_at() for r in relays if r.last_applied_at()]
    deliveries = [at for relay in relays for at in relay.kcl_log_times(FIRST_DELIVERY)[:1]]
    spawned = min(relay.spawned_at for relay in relays)
    rows = count_rows(relays[0])
    drained = max(lasts) - min(deliveries)  # from the first records handed to a processor to the last commit
    result = {
        "records": records,
        "shards": shards,
        "workers": workers,
        "put_seconds": round(put_seconds, 1),
        "rows_in_target": rows,
        "records_per_s": round(records / drained) if drained > 0 else None,
        "drain_s": round(drained, 2),
        "first_record_s": round(min(firsts) - spawned, 1),
        "first_record_s_per_worker": [round(first - spawned, 1) for first in firsts],
        "total_s": round(max(lasts) - spawned, 1),
        "exit_codes": codes,
        "usage": usage.as_dict(),
        "cpu_us_per_record": per_record(usage, records),
        "limit": limiting(usage),
    }
    say(f"{name}: {result['records_per_s']} records/s ({records} records, {shards} shards, {workers} workers); "
        f"CPU {usage.as_dict()['cpu_cores']}")  # fmt: skip
    return result


PREFETCH_STARTS = "Starting Prefetching thread"  # the KCL starts reading a shard
FIRST_DELIVERY = "Writing ProcessRecordsMessage"  # the JVM hands records to a processor


def wait_for_log(relays: list[Relay], needle: str, timeout: float) -> None:
    """Until one of the relays' KCL logged `needle` (with two workers on one shard, only one reads it)."""
    deadline = time.time() + timeout
    while not any(relay.kcl_log_times(needle) for relay in relays):
        for relay in relays:
            if relay.process is not None and relay.process.poll() is not None:
                raise RuntimeError(f"relay exited {relay.process.returncode}: {relay.stderr[-2000:]}")
        if time.time() > deadline:
            raise TimeoutError(f"no {needle!r} in the KCL log within {timeout:.0f} s")
        time.sleep(0.05)


def per_record(usage: Usage, records: int) -> dict[str, float]:
    """CPU microseconds per record, per component: what the machine's load does not change much."""
    return {name: round(seconds / records * 1e6, 1) for name, seconds in sorted(usage.cpu.items()) if seconds > 0}


def count_rows(relay: Relay) -> int:
    from kcl_relay.sink.admin import run_sql
    from kcl_relay.sink.target import parse_target

    _, ((count,),) = run_sql(parse_target(relay.target, relay.table), f'SELECT count(*) FROM "{relay.table}"')
    return int(count)


def limiting(usage: Usage) -> str:
    """What held the figure back, from CPU shares: a process near one core, or the machine's cores all busy."""
    cores = usage.as_dict()["cpu_cores"]
    busiest = max(cores, key=cores.get)
    total = sum(cores.values())
    parts = ", ".join(f"{name} {share:.2f}" for name, share in sorted(cores.items(), key=lambda kv: -kv[1]))
    return f"busiest: {busiest} ({cores[busiest]:.2f} cores); all processes {total:.2f} cores ({parts})"


def scenario_backlog(bench: Bench) -> dict[str, Any]:
    records = bench.sizes.backlog_records
    runs = [drain(bench, f"backlog-now-{i}", records) for i in range(bench.sizes.backlog_repeats)]
    # The run of median speed stands for "now"; every run is kept (the machine's load changes between them).
    ranked = sorted(runs, key=lambda run: run["records_per_s"] or 0)
    out = {"now": ranked[len(ranked) // 2]}
    out |= {f"now, run {i + 1}": run for i, run in enumerate(runs) if len(runs) > 1}
    if bench.sizes.with_seed:
        out["seed"] = drain(bench, "backlog-seed", bench.sizes.seed_backlog_records, module=SEED)
        # The same, with the JVM's C2 compiler back (the seed's JVM): does C1 alone cost throughput?
        out["now, JVM with C2"] = drain(
            bench, "backlog-c2", records, env={"KCL_RELAY_JVM_OPTIONS": "-XX:TieredStopAtLevel=4"}
        )
        out["now, batch-size 1000"] = drain(bench, "backlog-batch-1000", records, batch_size="1000")
    return out


def sustain(bench: Bench, name: str, rate: int, seconds: float, module: str = NOW) -> dict[str, Any]:
    """Writers at `rate` for `seconds` while the relay runs: does it keep up?"""
    stream = new_stream(bench.aws, 1)
    relay = bench.relay(stream, name, module=module, app=app_name("sustain"))
    bench.kinesis.put_records(StreamName=stream, Records=entries(10_000_000, 1))  # a first record: start-up apart
    relay.start()
    relay.wait_first_record(timeout=180)
    writer = RateWriter(bench.kinesis, stream, rate, seconds, run="")
    sampler = bench.sampler(relay)
    writer.start()
    progress: list[tuple[float, int]] = []  # (wall clock, records applied) while the writers write
    while writer.is_alive():
        progress.append((time.time(), relay.applied() - 1))
        time.sleep(0.5)
    writer.join()
    at_writer_end = relay.applied() - 1
    caught_up_after = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if relay.applied() - 1 >= writer.written:
                caught_up_after = round((relay.last_applied_at() or time.time()) - writer.finished, 2)
                break
            time.sleep(0.1)
    finally:
        usage = sampler.finish()
        relay.stop()
    window = writer.finished - writer.started
    # Steady state: the applied rate over the last two thirds of the window (the relay's own latency, about a
    # second, shifts the curve but not its slope). Keeping up means this equals the writers' rate.
    steady = [(at, count) for at, count in progress if at >= writer.started + window / 3]
    steady_rate = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]) if len(steady) > 1 else None
    lag = [round(writer.written_by(at) - count) for at, count in progress]
    result = {
        "target_rate": rate,
        "seconds": round(window, 1),
        "put_rate": round(writer.achieved_rate),
        "written": writer.written,
        "applied_in_window": at_writer_end,
        "applied_rate_in_window": round(at_writer_end / window),
        "steady_applied_rate": round(steady_rate) if steady_rate else None,
        "max_records_behind": max(lag) if lag else None,
        "behind_every_2s": lag[::4],
        "records_behind_at_end": lag[-1] if lag else None,
        "caught_up_s_after_writers_stopped": caught_up_after,
        "writer_error": repr(writer.error) if writer.error else None,
        "usage": usage.as_dict(),
        "cpu_us_per_record": per_record(usage, max(writer.written, 1)),
        "limit": limiting(usage),
    }
    say(f"{name}: put {result['put_rate']}/s, applied {result['steady_applied_rate']}/s steady, at most "
        f"{result['max_records_behind']} behind, caught up {caught_up_after} s after the writers stopped")  # fmt: skip
    return result


def scenario_sustained(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    out = {"now": sustain(bench, "sustained-now", sizes.sustained_rate, sizes.sustained_seconds)}
    if sizes.with_seed:
        out["seed"] = sustain(bench, "sustained-seed", sizes.sustained_rate, sizes.sustained_seconds, module=SEED)
    return out


# ---- 4. latency ---------------------------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    writer: RateWriter
    values: list[float]  # seconds from each record's put to its row being visible, of the records seen
    usage: Usage
    first_record_s: float

    def figures(self) -> dict[str, Any]:
        return {
            "records": self.writer.written,
            "seen": len(self.values),
            "p50_ms": round(percentile(self.values, 0.50) * 1000),
            "p99_ms": round(percentile(self.values, 0.99) * 1000),
            "max_ms": round(max(self.values) * 1000) if self.values else None,
        }


def measure_latency(
    bench: Bench, kinesis: Any, stream: str, relay: Relay, rate: int, seconds: float, roots: tuple[int, ...] = ()
) -> LatencyRun:
    """Starts the relay on a first record (start-up apart), then puts `rate` records/s for `seconds` and times
    each one until its row is visible (up to 60 s after the last put); `roots`: more processes to sample."""
    kinesis.put_records(StreamName=stream, Records=entries(10_000_000, 1))
    relay.start()
    first_record_s = relay.wait_first_record(timeout=180)
    writer = RateWriter(kinesis, stream, rate, seconds, run="")
    probe = VisibilityProbe(Path(relay.target.removeprefix("sqlite:///")), "bench", writer)
    sampler = bench.sampler(relay)
    for root in roots:
        sampler.add_root(root)
    writer.start()
    probe.start()
    writer.join()
    deadline = time.time() + 60
    while len(probe.visible_at) < writer.written and time.time() < deadline:
        time.sleep(0.1)
    probe.stop()
    usage = sampler.finish()
    relay.stop()
    return LatencyRun(writer, probe.latencies(), usage, first_record_s)


def latency(bench: Bench, name: str, rate: int, seconds: float, **options: Any) -> dict[str, Any]:
    stream = new_stream(bench.aws, 1)
    relay = bench.relay(stream, name, app=app_name("latency"), **options)
    run = measure_latency(bench, bench.kinesis, stream, relay, rate, seconds)
    result = {"options": options or "defaults", "rate": rate, **run.figures(), "usage": run.usage.as_dict()}
    say(f"{name}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms ({result['seen']} of {result['records']} seen)")
    return result


def scenario_latency(bench: Bench) -> dict[str, Any]:
    rate, seconds = bench.sizes.latency_rate, bench.sizes.latency_seconds
    return {
        "defaults": latency(bench, "latency-defaults", rate, seconds),
        "tuned": latency(bench, "latency-tuned", rate, seconds, idle_sleep="0.1", buffer_time="0.1"),
    }


# ---- 5. memory ----------------------------------------------------------------------------------------------------


def scenario_memory(bench: Bench) -> dict[str, Any]:
    """Peak RSS (VmHWM) of one processor and of the JVM while draining a backlog at batch-size 10,000."""
    result = drain(bench, "memory-batch-10000", bench.sizes.memory_records, batch_size="10000")
    peaks = result["usage"]["peak_rss_mb"]
    return {
        "batch_size": 10_000,
        "records": bench.sizes.memory_records,
        "processor_peak_rss_mb": peaks.get("processors"),
        "jvm_peak_rss_mb": peaks.get("jvm"),
        "supervisor_peak_rss_mb": peaks.get("supervisor"),
        "records_per_s": result["records_per_s"],
    }


# ---- 6. scaling ---------------------------------------------------------------------------------------------------


def scenario_scaling(bench: Bench) -> dict[str, Any]:
    """The same backlog spread over 1, 2, 4 shards, drained by 1 or 2 workers, into SQLite (one writer at a time:
    the embedded default) and into PostgreSQL (concurrent writers)."""
    out = {}
    for target in ("SQLite", "PostgreSQL"):
        for shards in bench.sizes.scaling_shards:
            for workers in bench.sizes.scaling_workers:
                name = f"scaling-{target.lower()}-{shards}s-{workers}w"
                out[f"{target}, {shards} shards, {workers} workers"] = drain(
                    bench,
                    name,
                    bench.sizes.scaling_records,
                    shards=shards,
                    workers=workers,
                    postgres=target == "PostgreSQL",
                )
    return out


# ---- where the processor's CPU goes: the stages in one process ---------------------------------------------------


def scenario_components(bench: Bench) -> dict[str, Any]:
    """Per-record cost of each stage of a processor, in process, on the benchmark's records (~600 B)."""
    from amazon_kclpy import dispatch

    from kcl_relay.cdc.decode import decode
    from kcl_relay.cdc.event import Position, RawRecord
    from kcl_relay.pipeline import Pipeline, PipelineOptions
    from kcl_relay.sink.target import parse_target
    from kcl_relay.sink.writer import open_sink

    count = bench.sizes.component_records
    payloads = [entry["Data"] for entry in entries(0, count)]
    line = json.dumps(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                {
                    "action": "record",
                    "data": base64.b64encode(data).decode(),
                    "partitionKey": f"k{i}",
                    "sequenceNumber": str(49_000_000_000 + i),
                    "subSequenceNumber": 0,
                    "approximateArrivalTimestamp": 1_795_000_000_000,
                }
                for i, data in enumerate(payloads)
            ],
        }
    )

    def timed(run: Callable[[], Any]) -> float:
        started = time.perf_counter()
        run()
        return (time.perf_counter() - started) / count * 1e6

    def protocol() -> list[RawRecord]:
        message = json.loads(line, object_hook=dispatch.message_decode)
        return [
            RawRecord(r.binary_data, Position("shardId-0", r.sequence_number, r.sub_sequence_number), r.partition_key)
            for r in message.records
        ]

    raw = protocol()
    out: dict[str, Any] = {
        "records": count,
        "protocol_us": round(timed(protocol), 1),
        "decode_us": round(timed(lambda: [decode(record) for record in raw]), 1),
    }
    for batch_size in (100, 1000, 10_000):
        target, _ = bench.target(f"components-{batch_size}")
        spec = parse_target(target, "bench")
        pipeline = Pipeline(lambda route, spec=spec: open_sink(spec), PipelineOptions(batch_size=batch_size))

        def apply(pipeline: Pipeline = pipeline) -> None:
            pipeline.add(raw)
            pipeline.flush()

        out[f"decode_and_apply_sqlite_batch_{batch_size}_us"] = round(timed(apply), 1)
        pipeline.close()
    say(f"components: {out}")
    return out


def scenario_cli(bench: Bench) -> dict[str, Any]:
    """Seconds until `kcl-relay --help` and a bad option answer (the interpreter's own start included)."""
    cases = {
        "--help": ["--help"],
        "load table --help": ["load", "table", "--help"],
        "bad option": ["load", "table", "kinesis+dynamodb+cdc://aws/s?nope=1"],
    }
    out = {}
    for name, args in cases.items():
        times = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "kcl_relay", *args], capture_output=True, check=False)
            times.append(time.perf_counter() - started)
        out[name] = {"median_s": round(sorted(times)[2], 3), "max_s": round(max(times), 3)}
    say(f"cli: {out}")
    return out


# ---- 7. enhanced fan-out beside polling (consumer=fanout), on kinesis-mock ---------------------------------------

READ_MODES = ("polling", "fanout")


def _mock_relay(bench: Bench, mock: Any, stream: str, name: str, consumer: str, **options: Any) -> Relay:
    """A relay reading `stream` from kinesis-mock (moto keeps the lease table) with consumer=polling|fanout."""
    url = source_url(
        mock.endpoint_url,
        stream,
        app=app_name(name),
        dynamodb_endpoint=bench.aws.endpoint_url,
        consumer=consumer,
        log_level="info",
        **options,
    )
    return Relay(url, bench.target(name)[0], "bench", bench.work / f"{name}-{time.monotonic_ns()}.log")


def _mock_stream(mock: Any) -> str:
    kinesis = mock.client()
    name = f"bench-{app_name('s')[-8:]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    return name


def fanout_latency(bench: Bench, mock: Any, consumer: str, rate: int, seconds: float) -> dict[str, Any]:
    """Put-to-visible of records written at `rate` while the relay follows the shard's tip, at default options."""
    kinesis = mock.client()
    stream = _mock_stream(mock)
    relay = _mock_relay(bench, mock, stream, f"fanout-latency-{consumer}", consumer)
    assert mock.pid is not None
    run = measure_latency(bench, kinesis, stream, relay, rate, seconds, roots=(mock.pid,))
    result = {
        "rate": rate,
        "put_rate": round(run.writer.achieved_rate),
        **run.figures(),
        "first_record_s": round(run.first_record_s, 2),
        "usage": run.usage.as_dict(),
    }
    say(f"fanout latency {consumer}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms ({result['seen']} seen)")
    return result


def fanout_backlog(bench: Bench, mock: Any, consumer: str, records: int) -> dict[str, Any]:
    """A backlog of `records` on one shard drained: records/s from the first applied record to the last."""
    kinesis = mock.client()
    stream = _mock_stream(mock)
    put_backlog(kinesis, stream, records)
    relay = _mock_relay(bench, mock, stream, f"fanout-backlog-{consumer}", consumer)
    relay.start()
    sampler = bench.sampler(relay)
    assert mock.pid is not None
    sampler.add_root(mock.pid)
    try:
        relay.wait_applied(records, timeout=600)
    finally:
        usage = sampler.finish()
        relay.stop()
    first, last = relay.first_applied_at(), relay.last_applied_at()
    span = (last - first) if first and last else None
    result = {
        "records": records,
        # kinesis-mock hands 1,500 records over in one GetRecords or one event: then first == last
        "first_applied_s": round(first - relay.spawned_at, 2) if first else None,
        "last_applied_s": round(last - relay.spawned_at, 2) if last else None,
        "drain_s": round(span, 2) if span else None,
        "records_per_s": round((records - 1) / span) if span else None,
        "usage": usage.as_dict(),
    }
    say(f"fanout backlog {consumer}: first applied {result['first_applied_s']} s, last {result['last_applied_s']} s")
    return result


def scenario_fanout(bench: Bench) -> dict[str, Any]:
    """consumer=fanout beside consumer=polling on one kinesis-mock (moto has no SubscribeToShard): put-to-visible
    while following the tip, and a backlog's drain rate. Both read the same emulator, so the ratio is the point."""
    from kcl_relay.localaws.kinesis_mock import KinesisMock

    rate, seconds, backlog = bench.sizes.fanout
    out: dict[str, Any] = {"latency": {}, "backlog": {}}
    with KinesisMock(log_path=bench.work / "kinesis-mock.log") as mock:
        for consumer in READ_MODES:
            out["latency"][consumer] = fanout_latency(bench, mock, consumer, rate, seconds)
        for consumer in READ_MODES:
            out["backlog"][consumer] = fanout_backlog(bench, mock, consumer, backlog)
    return out


def fanout_markdown(results: dict[str, Any]) -> list[str]:
    """The fan-out section of kcl_speed.md."""
    found = results.get("fanout")
    if not found or _failed_section(found):
        return [f"Scenario fanout failed: {found['error'][:500]}", ""] if found else []
    lines = [
        "## 7. Enhanced fan-out (consumer=fanout) beside polling, on kinesis-mock",
        "",
        "`python -m benchmarks.kcl_speed --only fanout`: kinesis-mock 0.6.2 serves the stream (moto has no",
        "SubscribeToShard), moto the lease table, a SQLite target, default options otherwise. The same emulator for",
        "both modes: the ratio matters more than the figures (kinesis-mock is no AWS: it pushes a shard's new records",
        "to a subscriber about once a second, AWS within ~70 ms).",
        "",
        "| read mode | put-to-visible p50 | p99 | max | records (put/s) | first record after start | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode, row in found["latency"].items():
        usage = row["usage"]
        lines.append(
            f"| {mode} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms | {row['seen']:,} of "
            f"{row['records']:,} ({row['put_rate']}/s) | {row['first_record_s']} s | "
            f"{usage['load_before']:.1f}, {usage['load_after']:.1f} |"
        )
    lines += [
        "",
        "A backlog on one shard, the relay started after it was written (seconds after `kcl-relay` started):",
        "",
        "| read mode | backlog | first record applied | last record applied | records/s first to last | CPU cores used "
        "| load |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for mode, row in found["backlog"].items():
        usage = row["usage"]
        cores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(usage["cpu_cores"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {mode} | {row['records']:,} | {row.get('first_applied_s')} s | {row.get('last_applied_s')} s | "
            f"{_rate(row['records_per_s'])} | {cores} | {usage['load_before']:.1f}, {usage['load_after']:.1f} |"
        )
    return [
        *lines,
        "",
        "CPU: kinesis-mock counts as other. Both modes applied every record kinesis-mock accepted: the throughput",
        "here is the emulator's (its PutRecords, and ~3 ms per record it reads out), not the relay's, and a backlog",
        "it serves arrives in one GetRecords or one event either way.",
        "",
    ]


def _rate(value: float | None) -> str:
    return "one delivery" if value is None else f"{value:,.0f}/s"


def _failed_section(section: Any) -> bool:
    return isinstance(section, dict) and "error" in section


SCENARIOS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "cli": scenario_cli,
    "start": scenario_start,
    "restart": scenario_restart,
    "backlog": scenario_backlog,
    "sustained": scenario_sustained,
    "latency": scenario_latency,
    "memory": scenario_memory,
    "scaling": scenario_scaling,
    "components": scenario_components,
    "fanout": scenario_fanout,
}


# ---- report -------------------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    from benchmarks.kcl_report import markdown

    return "\n".join([markdown(results), *fanout_markdown(results)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: shows the harness works, measures nothing")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for kcl_speed.md/.json")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    sizes = Sizes.smoke() if args.smoke else Sizes()
    work = Path(tempfile.mkdtemp(prefix="kcl-speed-"))
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "smoke": args.smoke,
        "work": str(work),
    }
    say(f"work folder {work}; machine {results['machine']}")
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "kcl_speed.json"
    # A partial run (--only) updates its scenarios in the results of earlier runs.
    base = json.loads(previous.read_text()) if args.only and previous.exists() and not args.smoke else {}
    failed = []
    with emulators(work) as aws:
        bench = Bench(aws, work, sizes)
        try:
            run_scenarios(bench, names, results, failed, args.out, base)
        finally:
            bench.close()
    say(f"wrote {args.out / 'kcl_speed.md'} and .json" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


def run_scenarios(
    bench: Bench, names: list[str], results: dict[str, Any], failed: list[str], out: Path, base: dict[str, Any]
) -> None:
    for name in names:
        started = time.monotonic()
        try:
            results[name] = SCENARIOS[name](bench)
        except Exception as error:  # recorded, and the other scenarios still run
            say(f"{name} failed: {type(error).__name__}: {error}")
            results[name] = {"error": f"{type(error).__name__}: {str(error)[:2000]}"}
            failed.append(name)
        results[name + "_seconds"] = round(time.monotonic() - started)
        results["machine"]["load_1min_after"] = machine()["load_1min"]
        write(out, base, results, names)


def write(out: Path, base: dict[str, Any], results: dict[str, Any], names: list[str]) -> None:
    """The results file: this run's scenarios over those of earlier runs, and which run produced which."""
    merged = {**base, **results}
    earlier = base.get("runs") or (
        [{"when": base["when"], "machine": base["machine"], "scenarios": [n for n in SCENARIOS if n in base]}]
        if base
        else []
    )
    merged["runs"] = [*earlier, {k: results[k] for k in ("when", "machine")} | {"scenarios": names}]
    (out / "kcl_speed.json").write_text(json.dumps(merged, indent=1, default=str) + "\n")
    (out / "kcl_speed.md").write_text(report(merged))


if __name__ == "__main__":
    main()
