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

# Upper bounds (seconds) of the batch apply latency histogram; a last bucket, +Inf, follows.
APPLY_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ShardStatus:
    shard_id: str
    applied: int = 0
    records: int = 0
    dead_letters: int = 0
    misfits: int = 0  # mapped attribute values that did not fit their column (kept in aux)
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
    # Only in a retired entry (StatusReader): the files it holds, by name, as [their updated_at, when folded in].
    absorbed: dict[str, list[float]] = field(default_factory=dict)

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
    """Every processor's status, by file (shard and process), and the retired entries that hold the files of exited
    processors (see StatusReader): sum them for totals, see latest_by_shard for state."""
    return StatusReader(state_dir).read()


RETIRED = ".retired"  # a retired entry: shards/<shard>.retired.json, a status like any other
ENDED_SHARDS = "ended-shards"  # the entry that takes over the oldest ended shards beyond MAX_ENDED_SHARDS
MAX_ENDED_SHARDS = 1000
ABSORBED_KEEP = 60.0  # seconds a removed file stays listed in its entry, for readers that saw it before removal
RACY_SECONDS = 1.0  # a file changed this recently may change again within the same mtime tick: read it again

_COUNTERS = ("applied", "records", "dead_letters", "misfits", "retries", "apply_count", "apply_seconds")
_Cached = tuple[tuple[int, int, int], bool, ShardStatus]  # stat key, trusted (not racy), the status


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


def _read_order(path: Path) -> tuple[int, str]:
    """Processors' files first, then retired entries, ENDED_SHARDS last: an entry is always read after what it may
    have absorbed, so a file removed meanwhile is found in the entry (which is written before the removal)."""
    name = path.stem
    return (2 if name == f"{ENDED_SHARDS}{RETIRED}" else 1 if name.endswith(RETIRED) else 0, name)


def absorb(total: ShardStatus | None, status: ShardStatus, name: str, now: float) -> ShardStatus:
    """A retired entry with `status` (file `name`) added: counters summed, state (flags, lag) from the newest."""
    if total is None:
        total = ShardStatus(shard_id=status.shard_id, updated_at=-1.0)
    newest = status if status.updated_at >= total.updated_at else total
    merged = ShardStatus(**{**asdict(newest), "shard_id": total.shard_id})
    for counter in _COUNTERS:
        setattr(merged, counter, getattr(total, counter) + getattr(status, counter))
    if len(status.apply_buckets) != len(APPLY_SECONDS_BUCKETS) + 1:  # another version's: left out, as metrics do
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
    merged.absorbed = {**total.absorbed, name: [status.updated_at, now]}
    return merged


class StatusReader:
    """read_statuses() for a reader that polls: unchanged files are not read again (stat cache).

    With compact=True (the supervisor: one compactor per state dir), the files of processors that have exited
    (shard end, lease lost or handed off, crashed) are folded into one retired entry per shard, <shard>.retired.json,
    and removed, so that files, memory and work follow the processors alive, not every one the run has seen; sums,
    and so every counter, stay the same. A failed processor's file stays: the worker stops at the first one. Ended
    shards keep an entry each up to MAX_ENDED_SHARDS; the oldest beyond fold into one, ENDED_SHARDS.
    Readers in other processes see the same sums, during compaction too: an entry is written before the files it
    holds are removed and lists them (name and updated_at) for ABSORBED_KEEP, and read() counts such a file once.
    """

    def __init__(self, state_dir: Path, compact: bool = False, alive: Callable[[int], bool] = pid_alive) -> None:
        self.folder = shard_dir(state_dir)
        self.compact = compact
        self.alive = alive
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()  # the metrics server may scrape from several threads

    def read(self) -> dict[str, ShardStatus]:
        with self._lock:
            statuses = self._read_files()
            if self.compact:
                self._compact(statuses)
            absorbed = {name: when[0] for status in statuses.values() for name, when in status.absorbed.items()}
            return {name: status for name, status in statuses.items() if absorbed.get(name) != status.updated_at}

    def _read_files(self) -> dict[str, ShardStatus]:
        now = time.time()
        cache: dict[str, _Cached] = {}
        for path in sorted(self.folder.glob("*.json"), key=_read_order):
            name = path.stem
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            cached = self._cache.get(name)
            if cached is None or cached[0] != key or not cached[1]:
                try:
                    status = ShardStatus(**json.loads(path.read_text()))
                except (OSError, ValueError, TypeError):
                    continue  # replaced or removed while reading: the next poll sees it
                cached = (key, now - stat.st_mtime_ns / 1e9 > RACY_SECONDS, status)
            cache[name] = cached
        self._cache = cache  # files gone are forgotten
        return {name: entry[2] for name, entry in cache.items()}

    def _compact(self, statuses: dict[str, ShardStatus]) -> None:
        """Fold exited processors' files into their shards' entries (in `statuses` too), then remove the files."""
        now = time.time()
        entries: dict[str, ShardStatus] = {}  # by shard: the entries to write
        gone: list[str] = []  # files to remove once the entries are written
        for name, status in list(statuses.items()):
            pid = _writer_pid(name)
            if pid is None or status.failed or self.alive(pid):
                continue
            shard = status.shard_id
            entry = entries.get(shard) or statuses.get(f"{shard}{RETIRED}")
            if entry is not None and entry.absorbed.get(name, [None])[0] == status.updated_at:
                gone.append(name)  # held already, not removed yet
                continue
            entries[shard] = absorb(entry, status, name, now)
            gone.append(name)
        if not entries and not gone:
            return
        present = set(statuses)
        for shard, entry in entries.items():  # forget removed files after a while, so entries stay small
            entry.absorbed = {n: w for n, w in entry.absorbed.items() if n in present or now - w[1] < ABSORBED_KEEP}
            self._write(f"{shard}{RETIRED}", entry, statuses)
        self._remove(gone, statuses)
        self._fold_ended(statuses, now)

    def _fold_ended(self, statuses: dict[str, ShardStatus], now: float) -> None:
        ended = sorted(
            (s for n, s in statuses.items() if n.endswith(RETIRED) and s.ended and s.shard_id != ENDED_SHARDS),
            key=lambda status: status.updated_at,
        )
        oldest = ended[: max(0, len(ended) - MAX_ENDED_SHARDS)]
        if not oldest:
            return
        name = f"{ENDED_SHARDS}{RETIRED}"
        entry = statuses.get(name)
        for status in oldest:
            folded = dataclasses.replace(status, shard_id=ENDED_SHARDS)
            entry = absorb(entry, folded, f"{status.shard_id}{RETIRED}", now)
        assert entry is not None
        present = set(statuses)
        entry.absorbed = {n: w for n, w in entry.absorbed.items() if n in present or now - w[1] < ABSORBED_KEEP}
        self._write(name, entry, statuses)
        self._remove([f"{status.shard_id}{RETIRED}" for status in oldest], statuses)

    def _write(self, name: str, entry: ShardStatus, statuses: dict[str, ShardStatus]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(json.dumps(asdict(entry)))
        os.replace(tmp, self.folder / f"{name}.json")  # atomic, and before the files it holds are removed
        statuses[name] = entry
        self._cache.pop(name, None)

    def _remove(self, names: list[str], statuses: dict[str, ShardStatus]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{name}.json").unlink()
            statuses.pop(name, None)
            self._cache.pop(name, None)


def latest_by_shard(statuses: dict[str, ShardStatus]) -> dict[str, ShardStatus]:
    """The current processor of each shard: the one that wrote last."""
    latest: dict[str, ShardStatus] = {}
    for status in statuses.values():
        current = latest.get(status.shard_id)
        if current is None or status.updated_at >= current.updated_at:
            latest[status.shard_id] = status
    return latest
