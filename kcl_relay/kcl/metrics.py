"""The opt-in Prometheus endpoint of a worker (`metrics-port`), served by the supervisor.

The processors are children of the JVM, one process per shard, and come and go with their leases: they keep no
metrics registry. Each one writes its status file (kcl/status.py); at every scrape the collector reads the files that
changed and sums them, with the per-shard totals the supervisor folds the files of exited processors into. Counters
are per processor process and only grow, so their sums per shard only grow too, for as long as this worker runs (a
restart starts from zero, which Prometheus' rate() and increase() handle as a counter reset). Beyond 1000 ended shards,
the oldest ones' series move into shard="ended-shards": sums over shards never drop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from kcl_relay.cdc import speedups
from kcl_relay.kcl.status import APPLY_SECONDS_BUCKETS, ShardStatus, StatusReader, latest_by_shard

PREFIX = "kcl_relay"


def holds_lease(status: ShardStatus) -> bool:
    """The shard's current processor still works on it: it has neither finished, lost, stopped nor failed."""
    return not (status.ended or status.lease_lost or status.stopped or status.failed)


class StatusCollector(Collector):
    """Metrics from the per-shard status files under `state_dir`, read at scrape time."""

    def __init__(self, state_dir: Path, application: str = "", stream: str = "") -> None:
        self.state_dir = state_dir
        self.labels = {"application": application, "stream": stream}
        self.reader = StatusReader(state_dir)  # reads only what changed since the last scrape

    def collect(self) -> Iterator[Metric]:
        statuses = self.reader.read()
        yield from self._counters(statuses)
        yield self._histogram(statuses)
        current = latest_by_shard(statuses)
        lag = GaugeMetricFamily(
            f"{PREFIX}_millis_behind_latest",
            "How far the shard's last read was behind the tip of the stream (MillisBehindLatest), per held shard",
            labels=[*self.labels, "shard"],
        )
        caught_up = GaugeMetricFamily(
            f"{PREFIX}_shard_caught_up",
            "1 when the shard's last read reached the tip with nothing left unapplied, per held shard",
            labels=[*self.labels, "shard"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_shard_status_age_seconds",
            "Seconds since the shard's processor last reported; it reports at every delivery, empty ones too, so a "
            "growing age means a processor stuck (e.g. retrying a database that is down), per held shard",
            labels=[*self.labels, "shard"],
        )
        now = time.time()
        for shard, status in sorted(current.items()):
            if not holds_lease(status):
                continue
            labels = [*self.labels.values(), shard]
            if status.millis_behind is not None:
                lag.add_metric(labels, status.millis_behind)
            caught_up.add_metric(labels, 1 if status.caught_up else 0)
            age.add_metric(labels, max(0.0, now - status.updated_at))
        yield lag
        yield caught_up
        yield age
        yield self._gauge("leases_held", "Shards this worker holds a lease on", sum(map(holds_lease, current.values())))
        yield self._gauge(
            "processors_failed",
            "Processors that exited without checkpoint: the database failed past retry-timeout, or a bug (the "
            "processor log has the traceback); the worker stops",
            sum(status.failed for status in current.values()),
        )
        applied_at = [status.last_applied_at for status in statuses.values() if status.last_applied_at]
        if applied_at:
            yield self._gauge(
                "last_applied_timestamp_seconds",
                "Unix time of the latest database batch that applied records",
                max(applied_at),
            )

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(self.labels))
        gauge.add_metric(list(self.labels.values()), value)
        return gauge

    def _counters(self, statuses: dict[str, ShardStatus]) -> Iterator[CounterMetricFamily]:
        counters = {
            "records_read": ("records", "Records read from the stream and handed to the database (per shard)"),
            "records_applied": ("applied", "Events applied to the target: upserts and deletes (per shard)"),
            "dead_letters": ("dead_letters", "Records written to the dead-letter table with their reason (per shard)"),
            "mapping_misfits": (
                "misfits",
                "Mapped attribute values that did not fit their column's type, kept in aux intact (per shard)",
            ),
            "database_retries": ("retries", "Database writes retried after a transient failure (per shard)"),
        }
        per_shard = _sum_per_shard(statuses, [attribute for attribute, _ in counters.values()])
        for name, (attribute, documentation) in counters.items():
            counter = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=[*self.labels, "shard"])
            for shard, sums in sorted(per_shard.items()):
                counter.add_metric([*self.labels.values(), shard], sums[attribute])
            yield counter
        fallbacks = CounterMetricFamily(
            f"{PREFIX}_fastpath_fallbacks",
            "Calls of a C fast path that raised, so that the pure-Python reference decided (some 8x slower; the "
            "processor log says why, once per kind), per path",
            labels=[*self.labels, "path"],
        )
        for path, count in sorted(_sum_fallbacks(statuses).items()):
            fallbacks.add_metric([*self.labels.values(), path], count)
        yield fallbacks

    def _histogram(self, statuses: dict[str, ShardStatus]) -> HistogramMetricFamily:
        counts = [0] * (len(APPLY_SECONDS_BUCKETS) + 1)
        total_seconds = 0.0
        for status in statuses.values():
            if len(status.apply_buckets) != len(counts):
                continue  # written by another version with other buckets: left out rather than misplaced
            counts = [mine + theirs for mine, theirs in zip(counts, status.apply_buckets, strict=True)]
            total_seconds += status.apply_seconds
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip([*APPLY_SECONDS_BUCKETS, math.inf], counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == math.inf else repr(bound), running))
        histogram = HistogramMetricFamily(
            f"{PREFIX}_batch_apply_seconds",
            "Seconds one database batch took, from decoding its records to the commit",
            labels=list(self.labels),
        )
        histogram.add_metric(list(self.labels.values()), cumulative, sum_value=total_seconds)
        return histogram


def _sum_per_shard(statuses: dict[str, ShardStatus], attributes: list[str]) -> dict[str, dict[str, int]]:
    sums: dict[str, dict[str, int]] = {}
    for status in statuses.values():
        shard = sums.setdefault(status.shard_id, dict.fromkeys(attributes, 0))
        for attribute in attributes:
            shard[attribute] += getattr(status, attribute)
    return sums


def _sum_fallbacks(statuses: dict[str, ShardStatus]) -> dict[str, int]:
    sums = dict.fromkeys(speedups.PATHS, 0)  # every path, from the start: a series to alert on before it grows
    for status in statuses.values():
        for path, count in status.fastpath_fallbacks.items():
            sums[path] = sums.get(path, 0) + count
    return sums


def registry_for(state_dir: Path, application: str = "", stream: str = "") -> CollectorRegistry:
    """A registry of our own (not the global one): only the relay's metrics, read from `state_dir`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(state_dir, application, stream))
    return registry


class MetricsServer:
    """/metrics over HTTP in a thread of the supervisor, for as long as the worker runs."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        from prometheus_client import start_http_server

        self._server: Any
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host, self.port = host, int(self._server.server_port)  # the port bound (port 0: a free one)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
