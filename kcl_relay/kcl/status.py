"""Per-shard status files: how processors (child processes of the JVM) tell the supervisor what they did.

The supervisor reads them for progress lines and to know when every shard is caught up (once=true).
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_left
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
    """Every processor's status, by file (shard and process): sum them for totals, see latest_by_shard for state."""
    statuses = {}
    for path in shard_dir(state_dir).glob("*.json"):
        try:
            statuses[path.stem] = ShardStatus(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # replaced while reading: the next poll sees it
    return statuses


def latest_by_shard(statuses: dict[str, ShardStatus]) -> dict[str, ShardStatus]:
    """The current processor of each shard: the one that wrote last."""
    latest: dict[str, ShardStatus] = {}
    for status in statuses.values():
        current = latest.get(status.shard_id)
        if current is None or status.updated_at >= current.updated_at:
            latest[status.shard_id] = status
    return latest
