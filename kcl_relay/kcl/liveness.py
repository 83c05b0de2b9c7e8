"""Is a lease's owner alive? Judged from what the KCL 3.1.3 itself keeps fresh, as its leader judges it.

- Worker metrics (the application's -WorkerMetricStats table): each worker's WorkerMetricStatsReporter writes its
  entry, `lut` (last update time, epoch seconds), every workerMetricsReporterFreqInMillis. LeaseAssignmentManager
  counts a worker as active while `lut` is at most DEFAULT_NO_OF_SKIP_STAT_FOR_DEAD_WORKER_THRESHOLD (2) reports old;
  we allow a second more, as `lut` is whole seconds. An older entry: the owner is gone, at once.
- The lease counter: the owner's DynamoDBLeaseRenewer bumps `leaseCounter` every failoverTimeMillis / 3 - 25 ms;
  the KCL takes a lease over once its counter has not moved for failoverTimeMillis. A fresh metrics entry alone does
  not prove a worker alive (one that stopped a second ago has one, and keeps its leases when it was the only worker:
  relay.py), so every other owner is watched until one of its leases' counters moves (alive: a third of the
  failover time, typically) or none did for the failover time (gone, as the KCL would see it).

Wall clocks: `lut` is the worker's clock, read on ours; hosts kept in step by NTP agree to well within a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEAD_WORKER_REPORTS = 2  # LeaseAssignmentManager.DEFAULT_NO_OF_SKIP_STAT_FOR_DEAD_WORKER_THRESHOLD
LUT_RESOLUTION = 1.0  # seconds: WorkerMetricStats.lastUpdateTime is Instant.getEpochSecond()
EPSILON_MILLIS = 25  # LeaseManagementConfig.epsilonMillis (renewer interval = failover / 3 - epsilon)
ALIVE, GONE = "alive", "gone"


@dataclass(frozen=True)
class Timing:
    """The application's KCL timing, as its workers run it."""

    report_millis: int  # workerMetricsReporterFreqInMillis
    failover_millis: int  # failoverTimeMillis

    @property
    def active_seconds(self) -> float:
        """How old a worker's metrics entry may be while the leader counts the worker as alive."""
        return DEAD_WORKER_REPORTS * self.report_millis / 1000 + LUT_RESOLUTION

    @property
    def renewal_seconds(self) -> float:
        return max(self.failover_millis / 3 - EPSILON_MILLIS, 100) / 1000


def metrics_ages(items: Iterable[Mapping[str, Any]], now: float) -> dict[str, float]:
    """Worker id -> seconds since its last metrics report, from WorkerMetricStats items."""
    ages: dict[str, float] = {}
    for item in items:
        wid, lut = item.get("wid", {}).get("S"), item.get("lut", {}).get("N")
        if wid and lut is not None:
            updated = float(lut)
            updated = updated / 1000 if updated > 1e11 else updated  # epoch seconds (KCL 3.1.3); millis tolerated
            ages[wid] = max(0.0, now - updated)
    return ages


def judge(owners: Iterable[str], ages: Mapping[str, float], timing: Timing) -> dict[str, str | None]:
    """Each owner: GONE when its metrics entry is stale, else None (alive or just stopped: `renewing` tells)."""
    return {owner: GONE if ages.get(owner, 0.0) > timing.active_seconds else None for owner in owners}


def renewing(
    counters: Callable[[], Mapping[str, tuple[str | None, int | None]]],
    owners: set[str],
    timing: Timing,
    first: Mapping[str, tuple[str | None, int | None]] | None = None,
    started: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Owners whose leases' counters move (ALIVE) or stay still for failoverTimeMillis (GONE), read again and again.

    `counters()` reads the lease table: lease key -> (owner, leaseCounter); `first`, a reading taken at `started`
    (monotonic), when there is one already. A lease that changed owner meanwhile proves nothing about the old one; an
    owner left with no lease is GONE (its leases were taken over).
    """
    if first is None or started is None:
        started, first = clock(), counters()
    first = {key: value for key, value in first.items() if value[0] in owners}
    verdicts: dict[str, str] = {}
    deadline = started + timing.failover_millis / 1000
    looked = False  # once at least, even when the first reading is older than the failover time already
    while len(verdicts) < len(owners) and not (looked and clock() >= deadline):
        sleep(min(timing.renewal_seconds / 2, max(0.0, deadline - clock())))
        now, looked = counters(), True
        for owner in owners - set(verdicts):
            mine = [key for key, (who, _) in first.items() if who == owner]
            if any(now.get(key, (None, None))[0] == owner and now[key][1] != first[key][1] for key in mine):
                verdicts[owner] = ALIVE
            elif not any(now.get(key, (None, None))[0] == owner for key in mine):
                verdicts[owner] = GONE
    return {**dict.fromkeys(owners, GONE), **verdicts}
