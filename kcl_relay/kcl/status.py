"""Per-shard status files: how processors (child processes of the JVM) tell the supervisor what they did.

The supervisor reads them for progress lines and to know when every shard is caught up (once=true).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


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
