"""Pieces of the KCL benchmarks: the emulators, writers at a rate, the relay as a user runs it, and what it cost.

Everything is measured from outside, as a user would see it: `kcl-relay load table` as a child process, records put
into the emulated Kinesis stream, rows read back from the target database, CPU and memory of every process from
/proc. Nothing here is a test: no figure is asserted against a target.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kcl_relay.cdc.event import canonical_key
from kcl_relay.localaws.server import LocalAws

T0 = 1_795_000_000_000_000  # ApproximateCreationDateTime of record 0, microseconds
ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---- records ----------------------------------------------------------------------------------------------------


def cdc_record(index: int, payload_bytes: int = 450, run: str = "") -> dict[str, Any]:
    """An INSERT of item `k{index}` as Kinesis Data Streams for DynamoDB writes it; ~600 B of JSON by default."""
    key = f"{run}k{index:08d}"
    return {
        "awsRegion": "us-east-1",
        "eventID": str(uuid.UUID(int=index)),
        "eventName": "INSERT",
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": "bench",
        "dynamodb": {
            "ApproximateCreationDateTime": T0 + index,
            "Keys": {"id": {"S": key}},
            "NewImage": {"id": {"S": key}, "n": {"N": str(index)}, "payload": {"S": "x" * payload_bytes}},
            "SizeBytes": payload_bytes + 40,
            "ApproximateCreationDateTimePrecision": "MICROSECOND",
        },
        "eventSource": "aws:dynamodb",
    }


def key_id(index: int, run: str = "") -> str:
    """The row key the relay stores for record `index` (the canonical key text)."""
    return canonical_key({"id": f"{run}k{index:08d}"})


def entries(first: int, count: int, payload_bytes: int = 450, run: str = "") -> list[dict[str, Any]]:
    return [
        {"Data": json.dumps(cdc_record(i, payload_bytes, run)).encode(), "PartitionKey": f"{run}k{i:08d}"}
        for i in range(first, first + count)
    ]


def put_backlog(kinesis: Any, stream: str, count: int, payload_bytes: int = 450, run: str = "") -> float:
    """Put `count` records as fast as the emulator takes them; return the seconds it took."""
    started = time.monotonic()
    for first in range(0, count, 500):
        batch = entries(first, min(500, count - first), payload_bytes, run)
        failed = kinesis.put_records(StreamName=stream, Records=batch)["FailedRecordCount"]
        if failed:
            raise RuntimeError(f"{failed} records refused by the emulator")
    return time.monotonic() - started


class RateWriter(threading.Thread):
    """Puts records at `rate` per second for `seconds` (PutRecords of up to 500, every 1/10 s); remembers when each
    record's PutRecords returned (the record is in the stream from then on)."""

    def __init__(self, kinesis: Any, stream: str, rate: int, seconds: float, run: str, payload_bytes: int = 450):
        super().__init__(daemon=True)
        self.kinesis, self.stream, self.rate, self.seconds = kinesis, stream, rate, seconds
        self.run_id, self.payload_bytes = run, payload_bytes
        self.put_at: dict[int, float] = {}  # record index -> wall clock when stored
        self.started = self.finished = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as error:  # reported by the scenario
            self.error = error

    def _write(self) -> None:
        tick = 0.1
        per_tick = max(1, round(self.rate * tick))
        self.started = time.time()
        written = 0
        deadline = self.started + self.seconds
        next_tick = self.started
        while time.time() < deadline:
            due = min(round((time.time() - self.started + tick) * self.rate), round(self.seconds * self.rate))
            while written < due:
                count = min(500, due - written, per_tick * 5)
                batch = entries(written, count, self.payload_bytes, self.run_id)
                failed = self.kinesis.put_records(StreamName=self.stream, Records=batch)["FailedRecordCount"]
                if failed:
                    raise RuntimeError(f"{failed} records refused by the emulator")
                now = time.time()
                for index in range(written, written + count):
                    self.put_at[index] = now
                written += count
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.time()))
        self.finished = time.time()

    @property
    def written(self) -> int:
        return len(self.put_at)

    def written_by(self, moment: float) -> int:
        """Records stored in the stream by wall clock `moment`."""
        return sum(1 for at in list(self.put_at.values()) if at <= moment)

    @property
    def achieved_rate(self) -> float:
        return self.written / max(self.finished - self.started, 1e-6)


# ---- the relay, as a user runs it -------------------------------------------------------------------------------


def source_url(endpoint_url: str, stream: str, **options: Any) -> str:
    query = "&".join(f"{name.replace('_', '-')}={value}" for name, value in options.items())
    return f"kinesis+dynamodb+cdc://{endpoint_url.removeprefix('http://')}/{stream}" + (f"?{query}" if query else "")


@dataclass
class Relay:
    """`kcl-relay load table SOURCE --target ... --table ...` as a child process (stderr kept)."""

    url: str
    target: str
    table: str
    log: Path
    module: str = "kcl_relay"  # benchmarks.kcl_seed: the same relay with the seed's KCL settings
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0  # wall clock

    def start(self) -> Relay:
        command = [sys.executable, "-m", self.module, "load", "table", self.url, "--target", self.target]
        command += ["--table", self.table]
        with open(self.log, "wb") as handle:
            self.spawned_at = time.time()
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **ENV, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=handle,
            )
        return self

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def state_dir(self) -> Path | None:
        match = re.search(r"logs in (\S+)", self.stderr)
        return Path(match.group(1)) if match else None

    def statuses(self) -> list[dict[str, Any]]:
        folder = self.state_dir
        if folder is None:
            return []
        found = []
        for path in (folder / "shards").glob("*.json"):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def kcl_log_times(self, needle: str) -> list[float]:
        """Wall clock of the KCL log lines (local time, ms) that contain `needle`."""
        folder = self.state_dir
        path = folder / "kcl.log" if folder else None
        if path is None or not path.exists():
            return []
        times = []
        for line in path.read_text(errors="replace").splitlines():
            if needle in line and line[:4].isdigit():
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                times.append(stamp.timestamp())
        return times

    def applied(self) -> int:
        return sum(status["applied"] for status in self.statuses())

    def first_applied_at(self) -> float | None:
        firsts = [s["first_applied_at"] for s in self.statuses() if s.get("first_applied_at")]
        return min(firsts) if firsts else None

    def last_applied_at(self) -> float | None:
        lasts = [s["last_applied_at"] for s in self.statuses() if s.get("last_applied_at")]
        return max(lasts) if lasts else None

    def wait_first_record(self, timeout: float) -> float:
        """Seconds from spawning `kcl-relay` to the first record committed to the target (the processor's clock)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            first = self.first_applied_at()
            if first is not None:
                return first - self.spawned_at
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.process.returncode}:\n{self.stderr[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"no record applied within {timeout:.0f} s:\n{self.stderr[-3000:]}")

    def wait_applied(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.applied() < count:
            if time.time() > deadline:
                raise TimeoutError(f"{self.applied()} of {count} applied after {timeout:.0f} s")
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.process.returncode}:\n{self.stderr[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM, as systemd or Ctrl-C would: the processors flush and checkpoint; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


# ---- what it cost: CPU and memory per component, from /proc ---------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        for child in _children(current):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _started_seconds_after_boot(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19]) / CLOCK_TICKS  # starttime


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def component_of(cmdline: str) -> str:
    if "kcl_relay.kcl.processor" in cmdline:
        return "processors"
    if "MultiLangDaemon" in cmdline or "kclrelay.launcher." in cmdline:  # the stock daemon, or kcl-relay's launcher
        return "jvm"
    if "kcl_relay.localaws.server" in cmdline:
        return "emulator"
    if " load table " in cmdline:
        return "supervisor"
    return "other"


@dataclass
class Usage:
    """CPU seconds and peak RSS per component over a window, sampled from /proc (a process is read until it ends)."""

    cpu: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def share(self, component: str) -> float:
        """CPU of a component as a share of one core over the window."""
        return self.cpu.get(component, 0.0) / max(self.seconds, 1e-6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "cpu_seconds": {name: round(value, 2) for name, value in sorted(self.cpu.items())},
            "cpu_cores": {name: round(self.share(name), 2) for name in sorted(self.cpu)},
            "peak_rss_mb": {name: round(value, 1) for name, value in sorted(self.peak_rss_mb.items())},
            "load_before": self.load_before,
            "load_after": self.load_after,
        }


class UsageSampler(threading.Thread):
    """Samples every process under `roots` every `interval` s: CPU used since the sampler started, VmHWM."""

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.baseline: dict[int, float] = {}
        self.latest: dict[int, float] = {}
        self.component: dict[int, str] = {}
        self.peak: dict[str, float] = {}
        self.stopping = threading.Event()
        self.started_at = time.monotonic()
        self.started_after_boot = _uptime()
        self.own_cpu_start = time.process_time()
        self.load_before = os.getloadavg()[0]

    def add_root(self, pid: int) -> None:
        self.roots.append(pid)

    def _sample(self) -> None:
        pids = set()
        for root in self.roots:
            pids.add(root)
            pids.update(descendants(root))
        for pid in pids:
            cpu = _cpu_seconds(pid)
            if cpu is None:
                continue
            if pid not in self.component:
                self.component[pid] = component_of(_cmdline(pid))
                # A process older than the window counts from its first sample, a newer one from its start.
                started = _started_seconds_after_boot(pid)
                self.baseline[pid] = cpu if started is not None and started < self.started_after_boot else 0.0
            self.latest[pid] = cpu
            rss = _peak_rss_mb(pid)
            if rss is not None:
                name = self.component[pid]
                self.peak[name] = max(self.peak.get(name, 0.0), rss)

    def run(self) -> None:
        while not self.stopping.is_set():
            self._sample()
            self.stopping.wait(self.interval)

    def finish(self) -> Usage:
        self._sample()
        self.stopping.set()
        self.join(timeout=5)
        usage = Usage(seconds=time.monotonic() - self.started_at, load_before=self.load_before)
        for pid, cpu in self.latest.items():
            name = self.component[pid]
            usage.cpu[name] = usage.cpu.get(name, 0.0) + cpu - self.baseline.get(pid, 0.0)
        usage.cpu["benchmark (writer, probe)"] = time.process_time() - self.own_cpu_start
        usage.peak_rss_mb = dict(self.peak)
        usage.load_after = os.getloadavg()[0]
        return usage


# ---- put-to-visible: when a record's row can be read in the target --------------------------------------------


class VisibilityProbe(threading.Thread):
    """Polls a SQLite target for the rows of records put so far; remembers when each one became visible."""

    def __init__(self, path: Path, table: str, writer: RateWriter, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.path, self.table, self.writer, self.interval = path, table, writer, interval
        self.visible_at: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        connection: sqlite3.Connection | None = None
        while not self.stopping.is_set():
            if connection is None and self.path.exists():
                connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1)
            if connection is not None:
                self._poll(connection)
            self.stopping.wait(self.interval)
        if connection is not None:
            connection.close()

    def _poll(self, connection: sqlite3.Connection) -> None:
        pending = [index for index in list(self.writer.put_at) if index not in self.visible_at]
        for start in range(0, len(pending), 500):
            chunk = pending[start : start + 500]
            by_key = {key_id(index, self.writer.run_id): index for index in chunk}
            marks = ",".join("?" * len(by_key))
            try:
                rows = connection.execute(f'SELECT pk FROM "{self.table}" WHERE pk IN ({marks})', list(by_key))
                found = [row[0] for row in rows]
            except sqlite3.Error:  # the table is not there yet, or the writer holds its lock: next poll
                return
            now = time.time()
            for pk in found:
                self.visible_at[by_key[pk]] = now

    def latencies(self) -> list[float]:
        return sorted(self.visible_at[i] - self.writer.put_at[i] for i in self.visible_at if i in self.writer.put_at)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), round(fraction * len(values) + 0.5)))
    return values[rank - 1]


# ---- emulators --------------------------------------------------------------------------------------------------


@contextmanager
def emulators(log_dir: Path) -> Iterator[LocalAws]:
    with LocalAws(log_path=log_dir / f"localaws-{uuid.uuid4().hex[:6]}.log") as aws:
        yield aws


def new_stream(aws: LocalAws, shards: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    return name


def app_name(prefix: str = "bench") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_1min": os.getloadavg()[0],
    }
