"""benchmarks/results/kcl_speed.json -> the Markdown table of benchmarks/results/kcl_speed.md."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "sustained": 2_000,
    "backlog": 5_000,
    "fresh": 10.0,
    "restart": 5.0,
    "p99_defaults": 2_000,
    "p99_tuned": 500,
    "processor_rss": 100.0,
}


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


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(item, target, now, seed, verdict)"""
    rows = []
    if "sustained" in results:
        now, seed = results["sustained"]["now"], results["sustained"].get("seed")
        ok = now["applied_rate_in_window"] >= 0.98 * now["put_rate"] and now["put_rate"] >= TARGETS["sustained"]
        rows.append(
            (
                "1. sustained, 1 shard, writers at 2,000/s",
                ">= 2,000 records/s",
                f"{now['applied_rate_in_window']:,}/s (writers {now['put_rate']:,}/s; caught up "
                f"{now['caught_up_s_after_writers_stopped']} s after they stopped)",
                f"{seed['applied_rate_in_window']:,}/s" if seed else "",
                _verdict(ok),
            )
        )
    if "backlog" in results:
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
    if "start" in results:
        now, seed = results["start"]["now"], results["start"].get("seed", {})
        for phase, label, target in (
            ("fresh", "2. first record, fresh lease table", "fresh"),
            ("restart", "2. first record, restart", "restart"),
        ):
            median = _median(now[phase])
            rows.append(
                (
                    label,
                    f"<= {TARGETS[target]:.0f} s",
                    f"{median:.1f} s (median of {', '.join(f'{v:.1f}' for v in now[phase])})",
                    ", ".join(f"{v:.1f} s" for v in seed.get(phase, [])),
                    _verdict(median is not None and median <= TARGETS[target]),
                )
            )
    if "latency" in results:
        for key, label, target in (
            ("defaults", "4. put-to-visible, defaults", "p99_defaults"),
            ("tuned", "4. put-to-visible, idle-sleep 0.1, buffer-time 0.1", "p99_tuned"),
        ):
            found = results["latency"][key]
            rows.append(
                (
                    label,
                    f"p99 <= {TARGETS[target]:,} ms",
                    f"p50 {found['p50_ms']} ms, p99 {found['p99_ms']} ms ({found['rate']}/s)",
                    "",
                    _verdict(found["p99_ms"] <= TARGETS[target]),
                )
            )
    if "memory" in results:
        found = results["memory"]
        rss = found["processor_peak_rss_mb"]
        rows.append(
            (
                "5. peak RSS of one processor, batch-size 10,000",
                "<= 100 MB",
                f"{rss:.0f} MB (JVM {found['jvm_peak_rss_mb']:.0f} MB)" if rss else "not seen",
                "",
                _verdict(rss is not None and rss <= TARGETS["processor_rss"]),
            )
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Is the relay ever the bottleneck? KCL start-up, throughput, latency, memory, scaling",
        "",
        "`python -m benchmarks.kcl_speed` (benchmarks/kcl_speed.py): `kcl-relay load table` at default options",
        "unless a row says otherwise, the real KCL 3.1.3 MultiLangDaemon, the local emulators (moto under hypercorn),",
        'a SQLite target. "seed": the same code with the seed\'s KCL settings (benchmarks/kcl_seed.py), same run.',
        f"Run {results['when']} on {machine['cpus']} cores ({machine['machine']}, Python {machine['python']}), "
        f"load average {machine['load_1min']:.1f} before, {machine.get('load_1min_after', float('nan')):.1f} after "
        "(the cores are shared with other work: figures are noisy).",
        "",
        "| item | target | now | seed | verdict |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in summary_rows(results)),
        "",
    ]
    if "scaling" in results:
        lines += [
            "## 6. Scaling: a backlog drained by 1 or 2 workers from 1, 2 or 4 shards",
            "",
            "| shards | workers | records/s | CPU cores used (from /proc) |",
            "| ---: | ---: | ---: | --- |",
        ]
        for found in results["scaling"].values():
            rate, cores = _rate(found["records_per_s"]), _cores(found["usage"])
            lines.append(f"| {found['shards']} | {found['workers']} | {rate} | {cores} |")
        lines.append("")
    if "components" in results:
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
    for name in ("backlog", "sustained", "latency"):
        if name in results:
            lines += [f"## CPU per process: {name}", "", "| run | seconds | CPU cores used | peak RSS MB |"]
            lines += ["| --- | ---: | --- | --- |"]
            for key, found in results[name].items():
                usage = found["usage"]
                rss = ", ".join(f"{k} {v:.0f}" for k, v in usage["peak_rss_mb"].items())
                lines.append(f"| {key} | {usage['seconds']:.0f} | {_cores(usage)} | {rss} |")
            lines.append("")
    return "\n".join(lines)
