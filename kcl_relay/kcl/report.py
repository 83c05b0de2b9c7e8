"""`kcl-relay status`: per shard, who holds its lease (and whether that worker is alive), where it is checkpointed
and how far behind it is, and which shards wait for a new owner.

Read from where any worker's state lives, not from a running worker: the stream's shards (ListShards) and the
application's KCL lease table in DynamoDB. The lag is the stream's own answer: an iterator just after the checkpoint
and one GetRecords of one record give MillisBehindLatest, how far that position is behind the tip of the shard.
Whether an owner is alive comes from the KCL's worker metrics and lease counters (kcl_relay.kcl.liveness).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kcl_relay.kcl.liveness import ALIVE, GONE, Timing, judge, metrics_ages, renewing
from kcl_relay.source.url import SourceError, SourceSpec

SHARD_END = "SHARD_END"
SENTINELS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", SHARD_END)  # the KCL's checkpoints that are no position
LAG_THREADS = 8  # shards asked at once: two small calls each


class LeaseTableMissing(LookupError):
    """The application has no lease table: no worker ever ran with these settings (or it was deleted)."""


@dataclass
class ShardReport:
    shard_id: str
    parents: tuple[str, ...] = ()
    listed: bool = True  # ListShards still returns it (False: past the stream's retention, only its lease is left)
    closed: bool = False  # has an EndingSequenceNumber: split or merged, no new records
    leased: bool = False  # the lease table has a lease for it
    owner: str | None = None
    owner_state: str | None = None  # liveness.ALIVE or GONE; None: not judged
    owner_report_age: float | None = None  # seconds since the owner's last worker metrics report
    checkpoint: str | None = None  # a sequence number, or TRIM_HORIZON / LATEST / AT_TIMESTAMP / SHARD_END
    lease_counter: int | None = None
    handoff_to: str | None = None  # checkpointOwner: a graceful lease handoff under way
    millis_behind: int | None = None  # MillisBehindLatest just after the checkpoint
    records_waiting: bool = False  # the read after the checkpoint returned a record
    read_to_end: bool = False  # a closed shard read to its end (no next iterator) but not yet checkpointed so
    lag_error: str | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    @property
    def holder(self) -> str | None:
        """The owner, unless it is gone: a dead worker holds nothing (the KCL takes its leases over)."""
        return None if self.owner_state == GONE else self.owner

    @property
    def waiting(self) -> bool:
        """Waits for a new owner: leased, not finished, and no owner or a gone one."""
        return self.leased and not self.finished and self.holder is None

    @property
    def caught_up(self) -> bool:
        return self.finished or self.read_to_end or (self.millis_behind == 0 and not self.records_waiting)

    def lag(self) -> str:
        """The lag in words, for people."""
        if self.finished:
            return "finished"
        if self.lag_error:
            return f"unknown ({self.lag_error})"
        if self.read_to_end:
            return "read to its end, SHARD_END not yet checkpointed"
        if self.millis_behind is None:
            return "unknown"
        if self.millis_behind == 0:
            return "records waiting, less than 1 s behind" if self.records_waiting else "caught up"
        return f"{format_millis(self.millis_behind)} behind"

    def as_json(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "parent_shard_ids": list(self.parents),
            "listed": self.listed,
            "closed": self.closed,
            "finished": self.finished,
            "leased": self.leased,
            "owner": self.owner,
            "owner_alive": None if self.owner_state is None else self.owner_state == ALIVE,
            "owner_last_report_seconds": None if self.owner_report_age is None else round(self.owner_report_age, 1),
            "waiting_for_owner": self.waiting,
            "checkpoint": self.checkpoint,
            "lease_counter": self.lease_counter,
            "handoff_to": self.handoff_to,
            "millis_behind_latest": self.millis_behind,
            "records_waiting": self.records_waiting,
            "caught_up": self.caught_up,
            "lag": self.lag(),
        }


def format_millis(millis: int) -> str:
    """1234 -> '1.2 s', 75000 -> '1 min 15 s', 7_500_000 -> '2 h 5 min'."""
    if millis < 1000:
        return f"{millis} ms"
    seconds = millis / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second} s"
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute} min"


# ---- reading the lease table and the stream --------------------------------------------------------------------


def read_leases(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    """The lease table's items by shard id; LeaseTableMissing when there is no such table."""
    leases: dict[str, dict[str, Any]] = {}
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        try:
            page = dynamodb.scan(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                raise LeaseTableMissing(table) from None
            raise
        for item in page.get("Items", []):
            key = item.get("leaseKey", {}).get("S")
            if key:
                leases[key.rsplit(":", 1)[-1]] = item  # multi-stream leases are account:stream:epoch:shardId
        if "LastEvaluatedKey" not in page:
            return leases
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def merge(shards: list[dict[str, Any]], leases: dict[str, dict[str, Any]]) -> list[ShardReport]:
    """One report per shard the stream lists or the lease table holds, by shard id."""
    reports: dict[str, ShardReport] = {}
    for shard in shards:
        parents = tuple(shard[key] for key in ("ParentShardId", "AdjacentParentShardId") if shard.get(key))
        reports[shard["ShardId"]] = ShardReport(
            shard_id=shard["ShardId"],
            parents=parents,
            closed="EndingSequenceNumber" in shard.get("SequenceNumberRange", {}),
        )
    for shard_id, item in leases.items():
        report = reports.get(shard_id)
        if report is None:
            report = reports[shard_id] = ShardReport(shard_id=shard_id, listed=False)
            report.parents = tuple(sorted(item.get("parentShardId", {}).get("SS", [])))
        report.leased = True
        report.owner = item.get("leaseOwner", {}).get("S")
        report.checkpoint = item.get("checkpoint", {}).get("S")
        report.handoff_to = item.get("checkpointOwner", {}).get("S")
        counter = item.get("leaseCounter", {}).get("N")
        report.lease_counter = int(counter) if counter is not None else None
    return [reports[shard_id] for shard_id in sorted(reports)]


def judge_owners(
    reports: list[ShardReport],
    metrics: list[dict[str, Any]],
    timing: Timing,
    counters: Callable[[], dict[str, tuple[str | None, int | None]]],
    now: float | None = None,
    first: dict[str, tuple[str | None, int | None]] | None = None,
    started: float | None = None,
) -> None:
    """Fill in whether each owner is alive: gone by a stale worker metrics entry, else by its leases' counters
    (`first`: the lease table's counters read at `started`, monotonic, the watch's start)."""
    ages = metrics_ages(metrics, time.time() if now is None else now)
    owners = {report.owner for report in reports if report.owner and not report.finished}
    verdicts = judge(owners, ages, timing)
    undecided = {owner for owner, verdict in verdicts.items() if verdict is None}
    if undecided:
        verdicts.update(renewing(counters, undecided, timing, first, started))
    for report in reports:
        if report.owner in verdicts:
            report.owner_state = verdicts[report.owner]
            report.owner_report_age = ages.get(report.owner)


def read_metrics(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """The WorkerMetricStats items; none when the table does not exist (a daemon that writes no metrics)."""
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True, "ProjectionExpression": "wid, lut"}
    while True:
        try:
            page = dynamodb.scan(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return items
            raise
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def lease_counters(dynamodb: Any, table: str) -> dict[str, tuple[str | None, int | None]]:
    """Lease key -> (owner, leaseCounter), for watching counters move."""
    return counters_of(read_leases(dynamodb, table))


def counters_of(leases: dict[str, dict[str, Any]]) -> dict[str, tuple[str | None, int | None]]:
    counters: dict[str, tuple[str | None, int | None]] = {}
    for shard_id, item in leases.items():
        counter = item.get("leaseCounter", {}).get("N")
        counters[shard_id] = (item.get("leaseOwner", {}).get("S"), int(counter) if counter is not None else None)
    return counters


def iterator_request(stream: str, report: ShardReport, start_timestamp: datetime | None = None) -> dict[str, Any]:
    """GetShardIterator's arguments for the position right after the shard's checkpoint.

    No lease yet (a new child shard, or a lease the KCL has not written): the shard will be read from its start.
    """
    request: dict[str, Any] = {"StreamName": stream, "ShardId": report.shard_id}
    checkpoint = report.checkpoint or "TRIM_HORIZON"
    if checkpoint.isdigit():
        return {**request, "ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": checkpoint}
    if checkpoint == "LATEST":
        return {**request, "ShardIteratorType": "LATEST"}
    if checkpoint == "AT_TIMESTAMP" and start_timestamp is not None:
        return {**request, "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": start_timestamp}
    return {**request, "ShardIteratorType": "TRIM_HORIZON"}  # TRIM_HORIZON, or AT_TIMESTAMP of an unknown time


def measure_lag(kinesis: Any, stream: str, report: ShardReport, start_timestamp: datetime | None = None) -> None:
    """Fill in MillisBehindLatest just after the checkpoint (nothing for a finished shard or one not listed)."""
    if report.finished or not report.listed:
        return
    try:
        iterator = kinesis.get_shard_iterator(**iterator_request(stream, report, start_timestamp))["ShardIterator"]
        answer = kinesis.get_records(ShardIterator=iterator, Limit=1)
    except ClientError as error:
        report.lag_error = error.response["Error"]["Code"]
        return
    except BotoCoreError as error:
        report.lag_error = type(error).__name__
        return
    report.records_waiting = bool(answer.get("Records"))
    report.millis_behind = answer.get("MillisBehindLatest")
    report.read_to_end = report.closed and not report.records_waiting and not answer.get("NextShardIterator")


def collect(
    kinesis: Any,
    dynamodb: Any,
    stream: str,
    lease_table: str,
    start_timestamp: datetime | None = None,
    list_shards: Callable[[Any, str], list[dict]] | None = None,
    metrics_table: str | None = None,
    timing: Timing | None = None,
) -> list[ShardReport]:
    """Every shard's report: its lease first (LeaseTableMissing before anything else), then the stream; with
    `metrics_table` and `timing`, whether each owner is alive."""
    from kcl_relay.source.kinesis import list_shards as list_all

    started = time.monotonic()
    leases = read_leases(dynamodb, lease_table)
    reports = merge((list_shards or list_all)(kinesis, stream), leases)

    def judge_all() -> None:  # the counters' watch from the first reading on, beside the lag calls
        if metrics_table is not None and timing is not None:
            metrics = read_metrics(dynamodb, metrics_table)
            counters = lambda: lease_counters(dynamodb, lease_table)  # noqa: E731
            judge_owners(reports, metrics, timing, counters, first=counters_of(leases), started=started)

    with ThreadPoolExecutor(max_workers=LAG_THREADS + 1) as pool:
        judged = pool.submit(judge_all)
        list(pool.map(lambda report: measure_lag(kinesis, stream, report, start_timestamp), reports))
        judged.result()
    return reports


# ---- output ------------------------------------------------------------------------------------------------------

COLUMNS = ("SHARD", "OWNER", "CHECKPOINT", "CLOSED", "FINISHED", "LAG")


@dataclass(frozen=True)
class Heading:
    application: str
    lease_table: str
    stream: str
    where: str  # the endpoint, or "AWS <region>"


def summary(reports: list[ShardReport]) -> str:
    leased = sum(report.leased for report in reports)
    holders = {report.holder for report in reports if report.holder}
    gone = sorted({report.owner for report in reports if report.owner and report.owner_state == GONE})
    waiting = sum(report.waiting for report in reports)
    behind = [report for report in reports if not report.caught_up]
    open_shards = sum(not report.closed for report in reports if report.listed)
    text = f"{len(reports)} shards ({open_shards} open), {leased} leases, {len(holders)} workers holding leases; "
    if waiting:
        text += f"{waiting} waiting for a new owner" + (f" ({', '.join(gone)} gone)" if gone else "") + "; "
    if not behind:
        return text + "every shard caught up"
    known = [report.millis_behind for report in behind if report.millis_behind is not None]
    worst = f", the most {format_millis(max(known))}" if known and max(known) > 0 else ""
    return text + f"{len(behind)} not caught up{worst}"


def render_text(heading: Heading, reports: list[ShardReport]) -> str:
    lines = [
        f"lease table {heading.lease_table} (application {heading.application}), stream {heading.stream} at "
        f"{heading.where}",
        summary(reports),
        "",
    ]
    rows = [COLUMNS, *(_row(report) for report in reports)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _row(report: ShardReport) -> tuple[str, ...]:
    owner = report.owner or ("(waiting)" if report.waiting else "(none)" if report.leased else "(no lease)")
    if report.owner and report.owner_state == GONE:
        owner += " (gone, waiting)" if report.waiting else " (gone)"
    if report.handoff_to:
        owner += f" -> {report.handoff_to}"
    closed = "yes" if report.closed else "no"
    if not report.listed:
        closed = "expired"  # past the stream's retention: ListShards no longer returns it
    return (
        report.shard_id,
        owner,
        report.checkpoint or "-",
        closed,
        "yes" if report.finished else "no",
        report.lag(),
    )


def render_json(heading: Heading, reports: list[ShardReport]) -> str:
    return json.dumps(
        {
            "application": heading.application,
            "lease_table": heading.lease_table,
            "stream": heading.stream,
            "endpoint": heading.where,
            "caught_up": all(report.caught_up for report in reports),
            "shards": [report.as_json() for report in reports],
        }
    )


# ---- the command -------------------------------------------------------------------------------------------------


def timing_of(spec: SourceSpec, kcl_props: dict[str, str]) -> Timing:
    """The workers' failover time and metrics report interval: the properties' when they say, else the relay's."""
    from kcl_relay.kcl.properties import worker_metrics_report_millis

    failover = int(kcl_props.get("failoverTimeMillis") or round(spec.failover_time * 1000))
    report = kcl_props.get("workerMetricsReporterFreqInMillis")
    return Timing(report_millis=int(report or worker_metrics_report_millis(failover / 1000)), failover_millis=failover)


def show(
    spec: SourceSpec,
    lease_table: str,
    as_json: bool = False,
    out: Callable[[str], None] = print,
    kcl_props: dict[str, str] | None = None,
) -> int:
    """`kcl-relay status`: 0 shown; 1 when the lease table does not exist; SourceError (exit 2) for bad input.

    `kcl_props`: a worker's KCL properties (`status --properties`): the metrics table's name and the timing."""
    import sys

    from botocore.exceptions import EndpointConnectionError

    from kcl_relay.kcl.leases import LeaseTables
    from kcl_relay.source import kinesis

    assert spec.stream is not None
    where = spec.endpoint_url or f"AWS {spec.region}"
    kcl_props = kcl_props or {}
    metrics_table = LeaseTables.of({"applicationName": lease_table, **kcl_props}).worker_metrics
    try:
        timing = timing_of(spec, kcl_props)
        if spec.is_dynamodb_streams:  # the table's DynamoDB stream, seen through the two Kinesis calls made here
            from kcl_relay.source import dynamodb_streams

            arn = dynamodb_streams.prepare_stream(spec)[0].arn
            reports = collect(
                dynamodb_streams.KinesisView(spec, arn),
                kinesis.client(spec, "dynamodb"),
                arn,
                lease_table,
                list_shards=lambda _view, _arn: dynamodb_streams.describe_shards(spec, arn),
                metrics_table=metrics_table,
                timing=timing,
            )
        else:
            reports = collect(
                kinesis.client(spec, "kinesis"),
                kinesis.client(spec, "dynamodb"),
                spec.stream,
                lease_table,
                spec.timestamp,
                metrics_table=metrics_table,
                timing=timing,
            )
    except LeaseTableMissing:
        at = spec.dynamodb_endpoint or where
        print(
            f"kcl-relay: no lease table {lease_table} at {at}: the relay never ran with these settings "
            "(stream, target table and app= name the application)",
            file=sys.stderr,
        )
        return 1
    except EndpointConnectionError as error:
        raise SourceError(f"cannot reach the AWS endpoint {error.kwargs.get('endpoint_url') or where}") from None
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code == "ResourceNotFoundException" and error.operation_name == "ListShards":
            raise SourceError(f"Kinesis stream {spec.stream!r} not found at {where}") from None
        raise SourceError(f"AWS refused {error.operation_name} at {where}: {code}") from None
    except BotoCoreError as error:
        raise SourceError(f"AWS call to {where} failed: {error}") from None
    heading = Heading(application=spec.app or lease_table, lease_table=lease_table, stream=spec.stream, where=where)
    out(render_json(heading, reports) if as_json else render_text(heading, reports))
    return 0
