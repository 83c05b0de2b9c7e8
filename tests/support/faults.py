"""Fault scenarios through real workers: writers on the emulated DynamoDB table, workers as separate processes that
can be stopped or crashed, the KCL's lease table, the DynamoDB Scan oracle and a report of measured figures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kcl_relay.cdc.event import Item, canonical_key
from kcl_relay.cdc.values import from_item
from kcl_relay.kcl.daemon import DAEMON_CLASS, LAUNCHER_CLASS
from kcl_relay.kcl.launcher import STREAMS_MAIN_CLASS
from kcl_relay.kcl.properties import read_properties
from kcl_relay.kcl.status import ShardStatus, read_statuses
from kcl_relay.localaws.pump import PumpClients, StreamPump
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import scan_items, write_until
from kcl_relay.sink.target import TargetSpec
from tests.support.e2e import ENV, relay_command
from tests.support.tables import read_items, same_value

KCL_MAIN_CLASSES = tuple(name.encode() for name in (LAUNCHER_CLASS, STREAMS_MAIN_CLASS, DAEMON_CLASS))

LONG = os.environ.get("KCL_RELAY_FAULTS_LONG", "") not in ("", "0")
REPORT_ENV = "KCL_RELAY_FAULTS_REPORT"  # a JSON file the scenarios add their measured figures to
KEY_SCHEMA = (("tenant", "S"), ("id", "N"))
APPLIED_LINE = re.compile(r"shard (\S+): (\d+) records -> ")


class Writers:
    """Item writes on the emulated DynamoDB table and the pump that republishes them into Kinesis, in the background.

    `between(n)` runs after each item write (the n-th), in the writer thread: poison records go in there.
    """

    def __init__(
        self,
        aws: LocalAws,
        table: str,
        stream: str,
        *,
        n_keys: int,
        pause: float,
        seed: int = 0,
        between: Callable[[int], None] | None = None,
    ) -> None:
        self.ddb = aws.client("dynamodb")
        self.pump = StreamPump(PumpClients.for_endpoint(aws.endpoint_url), table, stream)
        self.table, self.n_keys, self.pause, self.seed, self.between = table, n_keys, pause, seed, between
        self.stop_event = threading.Event()
        self.writes = 0
        self.put = 0  # records the pump put into Kinesis
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guarded, args=(f,)) for f in (self._write, self._pump)]

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as error:  # reported by __exit__: a test must not pass on a writer that died
            self.errors.append(error)

    def _on_write(self) -> None:
        self.writes += 1
        if self.between is not None:
            self.between(self.writes)

    def _write(self) -> None:
        write_until(
            self.ddb,
            self.table,
            self.stop_event,
            seed=self.seed,
            n_keys=self.n_keys,
            pause=self.pause,
            on_write=self._on_write,
        )

    def _count(self, n: int) -> None:
        self.put += n

    def _pump(self) -> None:
        self.pump.follow(self.stop_event, interval=0.2, on_put=self._count)

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop writing; put what the table's stream still holds."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.put += self.pump.pump_available()
        if self.errors:
            raise RuntimeError(f"a writer failed: {self.errors[0]!r}") from self.errors[0]

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker:
    """One `kcl-relay load table` process (the supervisor, its MultiLangDaemon JVM and the processors).

    Every worker started is kept in `Worker.started`, so that a test that fails half way can still kill them all
    (`crash_all`): a worker left running outlives the test, its emulators, and goes on retrying.
    """

    started: ClassVar[list[Worker]] = []

    @classmethod
    def crash_all(cls) -> None:
        while cls.started:
            cls.started.pop().cleanup()

    def __init__(self, name: str, url: str, target_url: str, table: str, log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "wb") as handle:
            # A session of its own: a crash can kill the whole worker, and pytest's terminal signals stay pytest's.
            self.process = subprocess.Popen(
                relay_command(url, target_url, table),
                env={**os.environ, **ENV},
                stdout=subprocess.DEVNULL,
                stderr=handle,
                start_new_session=True,
            )
        Worker.started.append(self)

    @property
    def state_dir(self) -> Path | None:
        match = re.search(r"logs in (\S+)", self.log.read_text(errors="replace"))
        return Path(match.group(1)) if match else None

    @property
    def worker_id(self) -> str:
        assert self.state_dir, self.log.read_text()[-2000:]
        props = read_properties(self.state_dir / "kcl.properties")
        return props.get("workerId") or props["workerIdentifier"]

    def statuses(self) -> dict[str, ShardStatus]:
        return read_statuses(self.state_dir) if self.state_dir else {}

    def flushes(self) -> dict[str, list[int]]:
        """shard -> the records of each flush committed here, from the processor log: one line per flush, written
        after the commit and before the checkpoint, so a crash cannot leave it behind the checkpoint."""
        if self.state_dir and (self.state_dir / "processor.log").exists():
            return applied_flushes((self.state_dir / "processor.log").read_text(errors="replace"))
        return {}

    def applied_per_shard(self) -> dict[str, int]:
        """Records each shard's processors applied (committed) here."""
        return {shard: sum(counts) for shard, counts in self.flushes().items()}

    def jvm_pid(self) -> int | None:
        """The MultiLangDaemon: the supervisor's child (it leads a session of its own, with the processors) that runs
        the KCL, by its main class: not a short-lived child such as `java -version` (taken for the JVM under load,
        whose exit then looked like the JVM's)."""
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            for child in children:
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                    if any(name in command for name in KCL_MAIN_CLASSES):
                        return int(child)
        return None

    def crash(self) -> None:
        """SIGKILL the JVM's session (daemon and processors) and the supervisor, as a machine failure would."""
        jvm = self.jvm_pid()
        if jvm is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(jvm, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM, as systemd's stop does; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.crash()

    def tail(self, chars: int = 2000) -> str:
        return f"--- {self.name}\n{self.log.read_text(errors='replace')[-chars:]}"


@dataclass(frozen=True)
class Lease:
    owner: str | None
    checkpoint: str
    counter: int


def leases(aws: LocalAws, app: str) -> dict[str, Lease]:
    """The KCL's lease table (named after the application): shard -> owner, checkpoint, counter."""
    ddb = aws.client("dynamodb")
    try:
        items = ddb.scan(TableName=app, ConsistentRead=True)["Items"]
    except ddb.exceptions.ResourceNotFoundException:  # before the first worker wrote it
        return {}
    return {
        item["leaseKey"]["S"]: Lease(
            owner=item.get("leaseOwner", {}).get("S"),
            checkpoint=item.get("checkpoint", {}).get("S", ""),
            counter=int(item.get("leaseCounter", {}).get("N", "0")),
        )
        for item in items
    }


def leader(aws: LocalAws, app: str) -> str | None:
    """The worker holding KCL 3's leader lock (dynamodb-lock-client's item in the application's -CoordinatorState)."""
    ddb = aws.client("dynamodb")
    try:
        items = ddb.scan(TableName=f"{app}-CoordinatorState", ConsistentRead=True)["Items"]
    except ddb.exceptions.ResourceNotFoundException:
        return None
    for item in items:
        if "leader" in item.get("key", {}).get("S", "").lower() and "ownerName" in item:
            owner: str = item["ownerName"]["S"]
            return owner
    return None


def owners(aws: LocalAws, app: str) -> dict[str, set[str]]:
    """worker id -> the shards it holds."""
    held: dict[str, set[str]] = {}
    for shard, lease in leases(aws, app).items():
        if lease.owner:
            held.setdefault(lease.owner, set()).add(shard)
    return held


def oracle(aws: LocalAws, table: str) -> dict[str, Item]:
    """The DynamoDB table now, by canonical key, as the relay stores items."""
    items = {}
    for raw in scan_items(aws.client("dynamodb"), table).values():
        item = from_item(raw)
        items[canonical_key({name: item[name] for name, _ in KEY_SCHEMA})] = item
    return items


def target_items(spec: TargetSpec) -> dict[str, Item]:
    with contextlib.suppress(Exception):  # the table appears with the first batch
        return read_items(spec, dict(KEY_SCHEMA))
    return {}


def differences(expected: dict[str, Item], got: dict[str, Item]) -> dict[str, list[str]]:
    """Keys missing from the target, extra in it, and differing: all empty when the target is exact."""
    return {
        "missing": sorted(expected.keys() - got.keys()),
        "extra": sorted(got.keys() - expected.keys()),
        "differing": sorted(k for k in expected.keys() & got.keys() if not same_value(expected[k], got[k])),
    }


@dataclass(frozen=True)
class Sync:
    """The target against the DynamoDB scan at the end of a scenario: what is lost, extra or stale, counted."""

    expected: dict[str, Item]  # the scan, by canonical key
    missing: list[str]  # keys of the scan not in the target
    extra: list[str]  # keys in the target not in the scan
    differing: list[str]  # keys in both whose values differ

    @property
    def lost(self) -> int:
        """Items of the scan the target does not hold as they are: missing, or there with other values."""
        return len(self.missing) + len(self.differing)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def summary(self) -> str:
        parts = {"missing": self.missing, "extra": self.extra, "differing": self.differing}
        return ", ".join(f"{len(keys)} {name} {keys[:3]}" for name, keys in parts.items() if keys) or "exact"


def compare(expected: dict[str, Item], got: dict[str, Item]) -> Sync:
    return Sync(expected, **differences(expected, got))


def wait_in_sync(aws: LocalAws, table: str, spec: TargetSpec, timeout: float) -> Sync:
    """Wait until the target equals the scan, at most `timeout` seconds; the last comparison (the caller reports
    its counts, then asserts it is exact)."""
    expected = oracle(aws, table)
    deadline = time.monotonic() + timeout
    while True:
        sync = compare(expected, target_items(spec))
        if sync.exact or time.monotonic() > deadline:
            return sync
        time.sleep(1)


def applied_flushes(processor_log: str) -> dict[str, list[int]]:
    """shard -> the records of each flush the processors committed, in order (one log line per flush)."""
    flushes: dict[str, list[int]] = {}
    for shard, count in APPLIED_LINE.findall(processor_log):
        flushes.setdefault(shard, []).append(int(count))
    return flushes


@dataclass(frozen=True)
class RestartAccount:
    """Deliveries of one shard's records over three runs: run 1 stopped gracefully, run 2 crashed, run 3 stopped
    gracefully at the end. Each run applies a contiguous range: from the checkpoint it started at, as many records
    as its flushes committed (runs: 1 from the stream's start, 2 from the checkpoints at the stop, 3 from those at
    the crash)."""

    graceful_redelivered: int  # records of run 1 that run 2 applied again
    crash_redelivered: int  # records of run 2 that run 3 applied again
    crash_bound: int  # what the crash could have left unacknowledged: the last flush of each run-2 worker
    undelivered: int  # records no run applied
    applied: int  # all applications, duplicates included
    records: int


def account_restarts(
    records: dict[str, int],
    at_stop: dict[str, int],
    at_crash: dict[str, int],
    runs: list[list[dict[str, list[int]]]],
) -> RestartAccount:
    """`records`: per shard, the stream's records; `at_stop`/`at_crash`: per shard, the records covered by the
    checkpoints after run 1 and after run 2's crash; `runs`: the three runs' workers' flushes (Worker.flushes)."""
    graceful = crash = bound = undelivered = applied = 0
    for shard, total in records.items():
        ran = [sum(sum(worker.get(shard, [])) for worker in run) for run in runs]
        applied += sum(ran)
        stop, crashed = at_stop.get(shard, 0), at_crash.get(shard, 0)
        graceful += ran[0] - stop
        crash += stop + ran[1] - crashed
        bound += sum(worker[shard][-1] for worker in runs[1] if worker.get(shard))
        # gaps: between run 1's end and run 2's start, run 2's end and run 3's start, run 3's end and the last record
        undelivered += max(0, stop - ran[0]) + max(0, crashed - stop - ran[1]) + max(0, total - crashed - ran[2])
    return RestartAccount(graceful, crash, bound, undelivered, applied, sum(records.values()))


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print the figures; with KCL_RELAY_FAULTS_REPORT set, add them to that JSON file (one entry per scenario)."""
    print(f"\n[faults {scenario}] " + ", ".join(f"{name}={value}" for name, value in figures.items()))
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    file = Path(path)
    results = json.loads(file.read_text()) if file.exists() else {}
    results[scenario] = {**figures, "long": LONG, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
