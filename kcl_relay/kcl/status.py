"""Per-shard status files: how processors (child processes of the JVM) tell the supervisor what they did.

The supervisor reads them for progress lines and to know when every shard is caught up (once=true), and folds
those of processors that have exited into per-shard totals as it goes (StatusReader), so a run of months keeps as
many files as it has processors alive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Upper bounds (seconds) of the batch apply latency histogram; a last bucket, +Inf, follows.
APPLY_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ShardStatus:
    shard_id: str
    applied: int = 0
    records: int = 0
    dead_letters: int = 0
    millis_behind: int | None = None
    caught_up: bool = False  # an empty read at the tip with nothing buffered: everything so far is applied
    ended: bool = False  # shard end reached and checkpointed
    lease_lost: bool = False
    stopped: bool = False  # shutdown requested: flushed and checkpointed
    failed: bool = False  # the database failed past the retries: exited without checkpoint
    first_applied_at: float | None = None  # wall clock of the first applied record
    last_applied_at: float | None = None  # wall clock of the latest flush that applied records
    updated_at: float = 0.0
    retries: int = 0  # database writes retried after transient failures
    # Database batches applied (decode to commit): how many, their seconds in total, and how many fell into each
    # bucket of APPLY_SECONDS_BUCKETS (not cumulative; the last one is +Inf).
    apply_count: int = 0
    apply_seconds: float = 0.0
    apply_buckets: list[int] = field(default_factory=lambda: [0] * (len(APPLY_SECONDS_BUCKETS) + 1))
    # Faults of the C fast paths in this process, per path (kcl_relay.cdc.speedups.fallbacks): each one ran the
    # pure-Python reference instead, some 8x slower.
    fastpath_fallbacks: dict[str, int] = field(default_factory=dict)

    def observe_apply(self, seconds: float) -> None:
        self.apply_count += 1
        self.apply_seconds += seconds
        self.apply_buckets[bisect_left(APPLY_SECONDS_BUCKETS, seconds)] += 1


def shard_dir(state_dir: Path) -> Path:
    return state_dir / "shards"


def write_status(state_dir: Path, status: ShardStatus) -> None:
    status.updated_at = time.time()
    folder = shard_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # One file per processor process: the KCL may start a second processor for a shard (a lease that comes back).
    name = f"{status.shard_id}.{os.getpid()}"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, folder / f"{name}.json")  # atomic: readers never see half a file


def read_statuses(state_dir: Path) -> dict[str, ShardStatus]:
    """Every processor's status, by file (shard and process), and one entry per shard for the processors retired
    into the totals (see StatusReader): sum them for totals, see latest_by_shard for state."""
    return StatusReader(state_dir).read()


RETIRED_FILE = "retired.state"  # not *.json: never taken for a processor's file
RETIRED_SUFFIX = ".retired"  # the names of retired entries in read()
ENDED_SHARDS = "ended-shards"  # the entry that takes over the oldest ended shards beyond MAX_ENDED_SHARDS
MAX_ENDED_SHARDS = 1000
ABSORBED_KEEP = 60.0  # seconds the names of removed files stay listed, for readers that saw them before removal
RACY_SECONDS = 1.0  # a file changed this recently may change again within the same mtime tick: read it again

_COUNTERS = ("applied", "records", "dead_letters", "retries", "apply_count", "apply_seconds")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _writer_pid(name: str) -> int | None:
    pid = name.rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def absorb(total: ShardStatus | None, status: ShardStatus) -> ShardStatus:
    """A shard's retired entry with `status` added: counters summed, state (flags, lag) from the newest of them."""
    if total is None:
        total = ShardStatus(shard_id=status.shard_id, updated_at=-1.0)
    newest = status if status.updated_at >= total.updated_at else total
    merged = ShardStatus(**{**asdict(newest), "shard_id": total.shard_id})
    for name in _COUNTERS:
        setattr(merged, name, getattr(total, name) + getattr(status, name))
    buckets = len(APPLY_SECONDS_BUCKETS) + 1
    if len(status.apply_buckets) != buckets:  # another version's buckets: left out, as the metrics leave them out
        merged.apply_seconds -= status.apply_seconds
        merged.apply_buckets = list(total.apply_buckets)
    else:
        merged.apply_buckets = [a + b for a, b in zip(total.apply_buckets, status.apply_buckets, strict=True)]
    merged.fastpath_fallbacks = dict(total.fastpath_fallbacks)
    for path, count in status.fastpath_fallbacks.items():
        merged.fastpath_fallbacks[path] = merged.fastpath_fallbacks.get(path, 0) + count
    firsts = [t for t in (total.first_applied_at, status.first_applied_at) if t is not None]
    lasts = [t for t in (total.last_applied_at, status.last_applied_at) if t is not None]
    merged.first_applied_at = min(firsts) if firsts else None
    merged.last_applied_at = max(lasts) if lasts else None
    return merged


class StatusReader:
    """read_statuses() for a reader that polls: unchanged files are not read again (stat cache).

    With compact=True (the supervisor: one compactor per state dir), the files of processors that have exited
    (shard end, lease lost or handed off, crashed) are folded into one retired entry per shard (shards/retired.state)
    and removed, so that files, memory and work follow the processors alive, not every one the run has seen; sums,
    and so every counter, stay the same. A failed processor's file stays: the worker stops at the first one. Ended
    shards keep an entry each up to MAX_ENDED_SHARDS; the oldest beyond fold into one, ENDED_SHARDS.
    Readers in other processes see the same sums, during compaction too: the retired file is written before a
    processor's file is removed and lists it (by name and time) for ABSORBED_KEEP, so that it is counted once.
    """

    def __init__(self, state_dir: Path, compact: bool = False, alive: Callable[[int], bool] = pid_alive) -> None:
        self.folder = shard_dir(state_dir)
        self.compact = compact
        self.alive = alive
        self._cache: dict[str, tuple[tuple[int, int, int], bool, ShardStatus]] = {}  # name: stat key, trusted, status
        self._retired: tuple[tuple[int, int, int], bool, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def read(self) -> dict[str, ShardStatus]:
        with self._lock:
            statuses = self._read_files()
            retired = self._read_retired()
            if self.compact:
                retired = self._compact(statuses, retired)
            absorbed = retired.get("absorbed", {})
            result = {
                name: status
                for name, status in statuses.items()
                if not (name in absorbed and absorbed[name][0] == status.updated_at)
            }
            for shard, fields in retired.get("shards", {}).items():
                result[f"{shard}{RETIRED_SUFFIX}"] = ShardStatus(**fields)
            return result

    def _cached(self, path: Path, now: float, cached: Any) -> tuple[tuple[int, int, int], bool, Any] | None:
        """(stat key, trusted, cached value) when the file is unchanged since; None when it must be read."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        trusted = now - stat.st_mtime_ns / 1e9 > RACY_SECONDS
        if cached is not None and cached[0] == key and cached[1]:
            return cached  # type: ignore[no-any-return]
        return key, trusted, None

    def _read_files(self) -> dict[str, ShardStatus]:
        now = time.time()
        cache: dict[str, tuple[tuple[int, int, int], bool, ShardStatus]] = {}
        for path in self.folder.glob("*.json"):
            name = path.stem
            entry = self._cached(path, now, self._cache.get(name))
            if entry is None:
                continue  # removed meanwhile
            if entry[2] is None:
                try:
                    entry = (entry[0], entry[1], ShardStatus(**json.loads(path.read_text())))
                except (OSError, ValueError, TypeError):
                    continue  # replaced or removed while reading: the next poll sees it
            cache[name] = entry
        self._cache = cache  # files gone are forgotten
        return {name: entry[2] for name, entry in cache.items()}

    def _read_retired(self) -> dict[str, Any]:
        path = self.folder / RETIRED_FILE
        entry = self._cached(path, time.time(), self._retired)
        if entry is None:
            self._retired = None
            return {}
        if entry[2] is None:
            try:
                entry = (entry[0], entry[1], json.loads(path.read_text()))
            except (OSError, ValueError):
                return self._retired[2] if self._retired else {}  # replaced while reading: the last one read
        self._retired = entry
        return entry[2]

    def _compact(self, statuses: dict[str, ShardStatus], retired: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        shards = {shard: ShardStatus(**fields) for shard, fields in retired.get("shards", {}).items()}
        absorbed = {name: when for name, when in retired.get("absorbed", {}).items() if now - when[1] < ABSORBED_KEEP}
        done = []
        for name, status in statuses.items():
            pid = _writer_pid(name)
            if name in absorbed and absorbed[name][0] == status.updated_at:
                done.append(name)  # absorbed before, not removed yet
            elif pid is not None and not status.failed and not self.alive(pid):
                shards[status.shard_id] = absorb(shards.get(status.shard_id), status)
                absorbed[name] = [status.updated_at, now]
                done.append(name)
        if not done and len(absorbed) == len(retired.get("absorbed", {})):
            return retired
        ended = sorted((s for s in shards.values() if s.ended and s.shard_id != ENDED_SHARDS), key=_age)
        for status in ended[: max(0, len(ended) - MAX_ENDED_SHARDS)]:
            del shards[status.shard_id]
            shards[ENDED_SHARDS] = absorb(shards.get(ENDED_SHARDS), dataclasses.replace(status, shard_id=ENDED_SHARDS))
        retired = {"shards": {shard: asdict(status) for shard, status in shards.items()}, "absorbed": absorbed}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{RETIRED_FILE}.tmp"
        tmp.write_text(json.dumps(retired))
        os.replace(tmp, self.folder / RETIRED_FILE)  # first the totals, then the files they hold go
        for name in done:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{name}.json").unlink()
            self._cache.pop(name, None)
        self._retired = None
        return retired


def _age(status: ShardStatus) -> float:
    return status.updated_at


def latest_by_shard(statuses: dict[str, ShardStatus]) -> dict[str, ShardStatus]:
    """The current processor of each shard: the one that wrote last."""
    latest: dict[str, ShardStatus] = {}
    for status in statuses.values():
        current = latest.get(status.shard_id)
        if current is None or status.updated_at >= current.updated_at:
            latest[status.shard_id] = status
    return latest
