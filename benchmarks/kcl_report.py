"""benchmarks/results/kcl_speed.json -> benchmarks/results/kcl_speed.md: the targets, then what limits each figure."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "sustained": 2_000,
    "backlog": 5_000,
    "fresh": 10.0,
    "restart": 5.0,
    "stop": 3.0,
    "p99_defaults": 2_000,
    "p99_tuned": 500,
    "processor_rss": 100.0,
}
COMPONENTS = ("emulator", "jvm", "processors", "supervisor", "benchmark (writer, probe)")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def _rate(value: float | None) -> str:
    return "one flush" if value is None else f"{value:,}/s"


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _cores(usage: dict[str, Any]) -> str:
    cores = usage.get("cpu_cores", {})
    return ", ".join(f"{name} {share:.2f}" for name, share in sorted(cores.items(), key=lambda kv: -kv[1]))


def _failed(section: Any) -> bool:
    return isinstance(section, dict) and "error" in section


def _sustained_row(found: dict[str, Any]) -> tuple[str, str, str, str, str]:
    now, seed = found["now"], found.get("seed")
    steady = now.get("steady_applied_rate")
    ok = (
        steady is not None
        and now["put_rate"] >= 0.99 * TARGETS["sustained"]
        and steady >= 0.97 * now["put_rate"]
        and now["caught_up_s_after_writers_stopped"] is not None
        and now["caught_up_s_after_writers_stopped"] <= 5
    )
    text = (
        f"{_rate(steady)} steady with writers at {now['put_rate']:,}/s; at most {now['max_records_behind']:,} "
        f"records behind; caught up {now['caught_up_s_after_writers_stopped']} s after the writers stopped"
    )
    seed_text = ""
    if seed:
        seed_text = f"{_rate(seed.get('steady_applied_rate'))}; {seed['records_behind_at_end']:,} behind at the end"
    return ("1. sustained, 1 shard, writers at 2,000/s for 30 s", ">= 2,000 records/s", text, seed_text, _verdict(ok))


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(item, target, now, seed, verdict)"""
    rows = []
    if "sustained" in results and not _failed(results["sustained"]):
        rows.append(_sustained_row(results["sustained"]))
    if "backlog" in results and not _failed(results["backlog"]):
        now, seed = results["backlog"]["now"], results["backlog"].get("seed")
        rows.append(
            (
                f"1. backlog, 1 shard, {now['records']:,} records of ~600 B",
                ">= 5,000 records/s",
                _rate(now["records_per_s"]),
                f"{_rate(seed['records_per_s'])} ({seed['records']:,} records)" if seed else "",
                _verdict(None if now["records_per_s"] is None else now["records_per_s"] >= TARGETS["backlog"]),
            )
        )
    if "start" in results and not _failed(results["start"]):
        found, seed = results["start"], results["start"].get("seed", {})
        for variant in ("now", "now, worker-id set"):
            for phase, label in (("fresh", "fresh lease table"), ("restart", "restart")):
                values = found.get(variant, {}).get(phase, [])
                median = _median(values)
                if median is None:
                    continue
                rows.append(
                    (
                        f"2. first record, {label}" + (", worker-id set" if variant != "now" else ""),
                        f"<= {TARGETS[phase]:.0f} s",
                        f"{median:.1f} s (median of {', '.join(f'{v:.1f}' for v in values)})",
                        ", ".join(f"{v:.1f} s" for v in seed.get(phase, [])) if variant == "now" else "",
                        _verdict(median <= TARGETS[phase]),
                    )
                )
    if "restart" in results and not _failed(results["restart"]):
        for key in ("idle", "under_load"):
            row = results["restart"].get(key)
            median = _median(row["restart_first_record_s"]) if row else None
            if median is None:
                continue
            rows.append(
                (
                    f"2b. first record after a restart, {row['load']}",
                    f"<= {TARGETS['restart']:.0f} s",
                    f"{median:.1f} s (median of {', '.join(f'{v:.1f}' for v in row['restart_first_record_s'])})",
                    "",
                    _verdict(median <= TARGETS["restart"]),
                )
            )
            stop = _median(row["stop_s"])
            if stop is not None:
                rows.append(
                    (
                        f"2b. graceful stop (SIGTERM to exit), {row['load']}",
                        f"<= {TARGETS['stop']:.0f} s",
                        f"{stop:.1f} s (median of {', '.join(f'{v:.1f}' for v in row['stop_s'])})",
                        "",
                        _verdict(stop <= TARGETS["stop"]),
                    )
                )
        once = _median(results["restart"].get("once_stop_s", []))
        if once is not None:
            values = results["restart"]["once_stop_s"]
            rows.append(
                (
                    "2b. once=true: from every shard caught up to the exit",
                    f"<= {TARGETS['stop']:.0f} s",
                    f"{once:.1f} s (median of {', '.join(f'{v:.1f}' for v in values)})",
                    "",
                    _verdict(once <= TARGETS["stop"]),
                )
            )
    if "latency" in results and not _failed(results["latency"]):
        for key, label, target in (
            ("defaults", "4. put-to-visible, defaults", "p99_defaults"),
            ("tuned", "4. put-to-visible, idle-sleep 0.1, buffer-time 0.1", "p99_tuned"),
        ):
            found = results["latency"][key]
            rows.append(
                (
                    label,
                    f"p99 <= {TARGETS[target]:,} ms",
                    f"p50 {found['p50_ms']} ms, p99 {found['p99_ms']} ms ({found['records']:,} records at "
                    f"{found['rate']}/s)",
                    "",
                    _verdict(found["p99_ms"] <= TARGETS[target]),
                )
            )
    if "cli" in results and not _failed(results["cli"]):
        found = results["cli"]
        worst = max(case["max_s"] for case in found.values())
        rows.append(
            (
                "2. `--help`, `load table --help`, a bad option",
                "well under 1 s",
                ", ".join(f"{name} {case['median_s']:.2f} s" for name, case in found.items())
                + f" (medians of 5; slowest {worst:.2f} s)",
                "",
                _verdict(worst < 0.5),
            )
        )
    if "memory" in results and not _failed(results["memory"]):
        found = results["memory"]
        rss = found["processor_peak_rss_mb"]
        rows.append(
            (
                "5. peak RSS of one processor, batch-size 10,000",
                "<= 100 MB",
                f"{rss:.0f} MB (JVM {found['jvm_peak_rss_mb']:.0f} MB, heap capped at 512 MB)" if rss else "not seen",
                "",
                _verdict(rss is not None and rss <= TARGETS["processor_rss"]),
            )
        )
    return rows


def _per_record(found: dict[str, Any]) -> str:
    costs = found.get("cpu_us_per_record", {})
    return " | ".join(f"{costs[name]:.0f}" if name in costs else "" for name in COMPONENTS)


def drain_table(title: str, runs: dict[str, Any]) -> list[str]:
    lines = [
        title,
        "",
        "records/s: from the first records the JVM handed to a processor to the last commit (processors' clocks).",
        "first record s: from `kcl-relay load table` to the first commit, per worker. CPU µs per record: the CPU",
        "seconds each component used from the KCL's first read to the end, over the records (from /proc; the",
        "PostgreSQL server's own CPU is not in it, SQLite's is in the processors'); unlike records/s they hardly",
        "move with the machine's load. cores: all of them together, per second of the run. Load: the machine's",
        "1-minute load average before and after the run (2 cores; other work shares them).",
        "",
        "| run | records | records/s | first record s | CPU µs/record: "
        + " | ".join(COMPONENTS)
        + " | total | cores | load |",
        "| --- | ---: | ---: | --- | " + " | ".join("---:" for _ in COMPONENTS) + " | ---: | ---: | --- |",
    ]
    for name, found in runs.items():
        if _failed(found):
            lines.append(f"| {name} | error: {found['error'][:200]} |")
            continue
        usage = found["usage"]
        firsts = ", ".join(f"{value}" for value in found.get("first_record_s_per_worker", [found["first_record_s"]]))
        total = sum(value for key, value in found.get("cpu_us_per_record", {}).items() if key in COMPONENTS[:4])
        cores = sum(usage.get("cpu_cores", {}).values())
        lines.append(
            f"| {name} | {found['records']:,} | {_rate(found['records_per_s'])} | {firsts} | {_per_record(found)} | "
            f"{total:.0f} | {cores:.2f} | {usage['load_before']:.1f} / {usage['load_after']:.1f} |"
        )
    return [*lines, ""]


def _runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each run with the scenarios whose figures are still its own (a later run of a scenario replaces them)."""
    claimed: set[str] = set()
    kept = []
    for run in reversed(results.get("runs", [])):
        own = [name for name in run["scenarios"] if name not in claimed]
        claimed.update(own)
        if own:
            kept.append({**run, "scenarios": own})
    return list(reversed(kept))


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Is the relay ever the bottleneck? KCL start-up, throughput, latency, memory, scaling",
        "",
        "`python -m benchmarks.kcl_speed` (benchmarks/kcl_speed.py): `kcl-relay load table` at default options",
        "unless a row says otherwise, the real KCL 3.1.3 (kcl-relay's launcher since 2026-12-02, the MultiLangDaemon",
        "before: each row's run is listed below), the local emulators (moto under hypercorn),",
        'a SQLite target. "seed": the same code with the seed\'s KCL settings (benchmarks/kcl_seed.py), same run.',
        f"On {machine['cpus']} cores ({machine['machine']}, Python {machine['python']}), shared with other work:",
        "figures are noisy; each drain row says the load it ran under. Runs (UTC; 1-minute load average before,",
        "after) and the scenarios each one's figures below come from:",
        "",
        *(
            f"- {run['when']} ({run['machine']['load_1min']:.1f}, {run['machine'].get('load_1min_after', 0):.1f}): "
            f"{', '.join(run['scenarios'])}."
            for run in _runs(results)
        ),
        "",
        "| item | target | now | seed | verdict |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in summary_rows(results)),
        "",
    ]
    for name in ("cli", "start", "restart", "backlog", "sustained", "latency", "memory", "scaling", "components"):
        if _failed(results.get(name)):
            lines += [f"Scenario {name} failed: {results[name]['error'][:500]}", ""]
    if "backlog" in results and not _failed(results["backlog"]):
        lines += drain_table("## 1. Backlog: one shard drained", results["backlog"])
    if "scaling" in results and not _failed(results["scaling"]):
        title = "## 6. Scaling: a backlog drained by 1 or 2 workers from 1, 2 or 4 shards"
        lines += drain_table(title, results["scaling"])
    if "memory" in results and not _failed(results["memory"]):
        found = results["memory"]
        lines += [
            "## 5. Memory: peak RSS (VmHWM from /proc) while draining at batch-size 10,000",
            "",
            f"One processor {found['processor_peak_rss_mb']} MB, the JVM {found['jvm_peak_rss_mb']} MB, the supervisor "
            f"{found['supervisor_peak_rss_mb']} MB; {found['records']:,} records at {_rate(found['records_per_s'])}.",
            "",
        ]
    if "components" in results and not _failed(results["components"]):
        found = results["components"]
        lines += [
            "## Where a processor's time goes (in one process, per record of ~600 B)",
            "",
            "| stage | µs per record | records/s on one core |",
            "| --- | ---: | ---: |",
        ]
        for key, value in found.items():
            if key.endswith("_us"):
                lines.append(f"| {key.removesuffix('_us').replace('_', ' ')} | {value} | {1e6 / value:,.0f} |")
        lines.append("")
    for name in ("sustained", "latency"):
        if name in results and not _failed(results[name]):
            lines += [f"## CPU per process: {name}", "", "| run | seconds | CPU cores used | peak RSS MB |"]
            lines += ["| --- | ---: | --- | --- |"]
            for key, found in results[name].items():
                usage = found["usage"]
                rss = ", ".join(f"{k} {v:.0f}" for k, v in usage["peak_rss_mb"].items())
                lines.append(f"| {key} | {usage['seconds']:.0f} | {_cores(usage)} | {rss} |")
            lines.append("")
    return "\n".join(lines)
