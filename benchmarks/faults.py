"""Fault scenarios, long form: run tests/e2e/test_faults_e2e.py with larger counts and record what it measured.

    python -m benchmarks.faults [--short] [-k EXPRESSION]

Runs the scenarios (three workers sharing a stream, a graceful stop, a crash, the KCL leader's crash, restarts of
every worker, poison records, and tests/e2e/test_outage_e2e.py's database outage) with KCL_RELAY_FAULTS_LONG=1
(unless --short) and KCL_RELAY_FAULTS_REPORT pointing at benchmarks/results/faults.json, then writes
benchmarks/results/faults.md from it. `-k leader` runs the leader's crash alone.
The tests assert the outcomes (exact final state, exit codes, time bounds); this only keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
LABELS = {  # figure -> what it means, in the order of the table
    "workers": "workers",
    "shards": "shards",
    "failover_time_s": "failover-time (s)",
    "spread_s": "start until every worker holds a lease and applies (s)",
    "leases_at_spread": "leases per worker then",
    "sigterm_leases": "SIGTERM: leases of the stopped worker",
    "sigterm_handover_s": "SIGTERM: until another worker holds them (s)",
    "sigterm_exit_s": "SIGTERM: until the worker exited (s)",
    "sigterm_exit_code": "SIGTERM: exit code",
    "sigkill_leases": "SIGKILL: leases of the crashed worker",
    "sigkill_of_leader": "SIGKILL: the crashed worker was the KCL leader",
    "sigkill_lease_takeover_s": "SIGKILL: until another worker holds them (s)",
    "sigkill_first_apply_s": "SIGKILL: until it applied records of each of them (s)",
    "leader_leases": "leader crash: leases the leader held",
    "leader_lock_takeover_s": "leader crash: until another worker holds the leader lock (s)",
    "leader_lease_takeover_s": "leader crash: until other workers hold its leases (s)",
    "leader_first_apply_s": "leader crash: until they applied records of each of them (s)",
    "graceful_restart_resume_s": "graceful restart: until records applied again (s)",
    "graceful_restart_redelivered": "graceful restart: records delivered again",
    "crash_restart_resume_s": "crash restart: until records applied again (s)",
    "crash_restart_redelivered": "crash restart: records delivered again",
    "records_applied_per_run": "records applied per worker run",
    "jvm_stopped_s": "kcl-relay killed: until its JVM stopped (s)",
    "outage_s": "database outage (s)",
    "checkpoint_moved_during_outage": "a checkpoint moved during the outage",
    "poison_records": "poison records put",
    "dead_letters": "dead letters",
    "item_writes": "item writes (DynamoDB)",
    "records_put": "records put (Kinesis)",
    "records_applied": "records applied",
    "redelivered": "records applied more than once",
    "redelivered_total": "records applied more than once",
    "items_at_end": "items at the end (scan = target)",
    "lost": "records lost",
    "elapsed_s": "test time (s)",
}


def run(short: bool, expression: str | None, report: Path) -> int:
    env = {**os.environ, "KCL_RELAY_FAULTS_REPORT": str(report)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if not short:
        env["KCL_RELAY_FAULTS_LONG"] = "1"
    tests = ["tests/e2e/test_faults_e2e.py", "tests/e2e/test_outage_e2e.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *tests]
    if expression:
        command += ["-k", expression]
    return subprocess.run(command, cwd=REPO, env=env).returncode


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Fault scenarios: measured figures",
        "",
        f"Run: `{meta['command']}` on {meta['machine']}, {meta['finished']}; pytest exit code {meta['exit_code']}; "
        f"load average {meta.get('load', 'unknown')}. A run with -k replaces only its own scenarios' sections (each "
        "says when it was recorded). Moto under hypercorn on loopback, real KCL workers (kcl-relay's launcher of the "
        "KCL 3.1.3 Scheduler since 2026-12-02; the MultiLangDaemon before), item writes on the emulated DynamoDB "
        "table pumped into Kinesis. What each scenario does and asserts: docs/faults.md.",
        "",
    ]
    for scenario, figures in sorted(results.items()):
        form = "long" if figures.get("long") else "short"
        lines += [
            f"## {scenario} ({form} form, {figures.get('recorded_at', '')})",
            "",
            "| figure | value |",
            "| --- | --- |",
        ]
        for key, label in LABELS.items():
            if key in figures:
                lines.append(f"| {label} | {figures[key]} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the CI sizes instead of the long form")
    parser.add_argument("-k", dest="expression", help="only the scenarios pytest -k selects")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "faults.json"
    if not args.expression:  # a whole run replaces the figures; -k adds to (or replaces) those of its scenarios
        report.unlink(missing_ok=True)
    started = time.time()
    code = run(args.short, args.expression, report)
    results = json.loads(report.read_text()) if report.exists() else {}
    meta = {
        "command": "python -m benchmarks.faults"
        + (" --short" if args.short else "")
        + (f" -k {args.expression}" if args.expression else ""),
        "load": " / ".join(f"{value:.1f}" for value in os.getloadavg()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "exit_code": code,
        "seconds": round(time.time() - started),
    }
    (args.out / "faults.md").write_text(markdown(results, meta) + "\n")
    print(f"wrote {args.out / 'faults.md'} and {report}")
    return code


if __name__ == "__main__":
    sys.exit(main())
