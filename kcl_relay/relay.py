"""The two ways to relay: a Kinesis stream through a KCL worker, or an NDJSON file through the same pipeline."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.daemon import find_jars, find_java
from kcl_relay.kcl.leases import LeaseTables, prepare_leases, release_leases
from kcl_relay.kcl.properties import INITIAL_POSITION, build_properties
from kcl_relay.kcl.supervisor import WorkerPlan, make_state_dir, run_worker, say
from kcl_relay.pipeline import FlushStats, Pipeline, PipelineOptions, settle_heap, target_for
from kcl_relay.sink.admin import check_reachable
from kcl_relay.sink.base import Sink
from kcl_relay.sink.options import sink_options
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import open_sink
from kcl_relay.source import kinesis
from kcl_relay.source.replay import batched, read_records
from kcl_relay.source.url import SourceError, SourceSpec

# Keys a properties file cannot override: our processor, and the empty calls it needs for buffer-time and once=true.
PROCESSOR_KEYS = ("executableName", "processingLanguage", "callProcessRecordsEvenForEmptyRecordList")


def replay_file(spec: SourceSpec, target: TargetSpec) -> int:
    """Apply a file of CDC records in batches of batch-size: exit code 0, or 1 when the target failed."""
    assert spec.path is not None
    path = Path(spec.path)
    if not path.is_file():
        raise SourceError(f"replay file not found: {path}")
    check_reachable(target)

    def sink_for(dynamodb_table: str | None) -> Sink:
        return open_sink(target_for(target, dynamodb_table), **sink_options(spec))

    pipeline = Pipeline(sink_for, PipelineOptions.of(spec))
    settle_heap()
    totals = FlushStats()
    started = time.monotonic()
    try:
        for records in batched(read_records(path), spec.batch_size):
            pipeline.add(records)
            totals.add(pipeline.flush())
    except KeyboardInterrupt:
        say(f"interrupted after {totals.records} records (all of them applied; run again to apply the rest)")
        return 130
    except Exception as error:  # the sink retried transient failures already: this one is final
        say(f"error: the target failed after {totals.records} records: {type(error).__name__}: {error}")
        return 1
    finally:
        pipeline.close()
    elapsed = time.monotonic() - started
    say(
        f"replayed {totals.records} records from {path} in {elapsed:.2f} s "
        f"({totals.records / max(elapsed, 1e-6):.0f}/s): "
        f"{totals.upserted} upserts, {totals.deleted} deletes, {totals.stale} stale, {totals.ttl_ignored} ttl ignored, "
        f"{totals.dead_letters} dead letters"
    )
    return 0


def plan_worker(spec: SourceSpec, target: TargetSpec, properties: dict[str, str] | None = None) -> WorkerPlan:
    """Validate everything a worker needs before anything starts; SetupError/SourceError otherwise."""
    java, jars = find_java(), find_jars()
    check_reachable(target)
    shards = kinesis.prepare_stream(spec)
    seqno_shard = kinesis.shard_of_sequence_number(spec, shards, spec.seqno) if spec.seqno else None
    application = spec.application_name(target.table, target.describe())
    props = build_properties(spec, application)
    if properties:  # run --properties: the user's file wins, but the processor and its protocol needs are ours
        props = {**props, **properties, **{key: props[key] for key in PROCESSOR_KEYS}}
    if not (props.get("workerId") or props.get("workerIdentifier")):
        # Named here, not by the KCL (a bare UUID), so that a graceful stop can hand this worker's leases back.
        props["workerId"] = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
    prepare_lease_table(spec, props)
    state_dir = make_state_dir(application)
    processor = ProcessorConfig(
        target_url=target.url.render_as_string(hide_password=False),
        table=target.qualified_table,
        state_dir=str(state_dir),
        batch_size=spec.batch_size,
        buffer_time=spec.buffer_time,
        idle_sleep=spec.idle_sleep,
        ttl=spec.ttl,
        route_tables=spec.route_tables,
        source_table=spec.source_table,
        tombstone_retention=spec.tombstone_retention,
        retry_timeout=spec.retry_timeout,
        start=spec.start,
        seqno=spec.seqno,
        seqno_shard=seqno_shard,
    )
    aws_env = {"AWS_REGION": spec.region}
    if spec.credentials:
        aws_env |= {
            "AWS_ACCESS_KEY_ID": spec.credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": spec.credentials.secret_access_key,
        }

    def open_shards() -> set[str]:
        return kinesis.open_shard_ids(kinesis.list_shards(kinesis.client(spec, "kinesis"), spec.stream))

    if spec.start in ("seqno-at", "seqno-after"):
        say(f"start={spec.start} {spec.seqno} applies to shard {seqno_shard}; other shards start at their beginning")
    return WorkerPlan(
        java=java,
        jars=jars,
        properties=props,
        processor=processor,
        aws_env=aws_env,
        once=spec.once,
        open_shards=open_shards,
        # A session token of other credentials must not pair with the URL's key.
        drop_env=("AWS_SESSION_TOKEN",) if spec.credentials else (),
    )


def prepare_lease_table(spec: SourceSpec, props: dict[str, str]) -> None:
    """A fresh application: write the lease table and leases the KCL would write after its empty-table wait.

    Only an optimization: when it fails (no CreateTable permission, say), the KCL creates them itself, slowly.
    """
    tables = LeaseTables.of(props)
    try:
        prepared = prepare_leases(
            kinesis.client(spec, "dynamodb"),
            kinesis.client(spec, "kinesis"),
            tables,
            props["streamName"],
            INITIAL_POSITION[spec.start],
            spec.timestamp,
        )
    except (BotoCoreError, ClientError, TimeoutError) as error:
        say(f"could not prepare lease table {tables.leases} ({describe_error(error)}); the KCL creates it, slower")
        return
    if prepared.created or prepared.skipped.startswith("the shard"):
        say(prepared.describe(tables.leases))


def describe_error(error: Exception) -> str:
    if isinstance(error, ClientError):
        return f"{error.operation_name}: {error.response['Error']['Code']}"
    return f"{type(error).__name__}: {error}"


def release_worker_leases(spec: SourceSpec, props: dict[str, str]) -> None:
    """After a graceful stop: the leases go back at once, so a restart (or another worker) takes them in seconds."""
    tables = LeaseTables.of(props)
    worker = props.get("workerId") or props["workerIdentifier"]
    try:
        released = release_leases(kinesis.client(spec, "dynamodb"), tables, worker)
    except (BotoCoreError, ClientError) as error:
        say(f"could not hand back the leases of worker {worker} ({describe_error(error)}); they expire instead")
        return
    if released:
        say(f"handed back {released} leases of worker {worker}")


def run_stream(spec: SourceSpec, target: TargetSpec, properties: dict[str, str] | None = None) -> int:
    plan = plan_worker(spec, target, properties)
    if spec.worker_id is None:  # hand the leases back as soon as every processor checkpointed at a graceful stop
        plan.hand_back = lambda: release_worker_leases(spec, plan.properties)
    code = run_worker(plan)
    # Stopped gracefully (every processor flushed and checkpointed, the JVM is gone) under a worker id of ours: no
    # later run will carry it, so its leases go back now. A worker-id the user set comes back with its leases.
    if code == 0 and spec.worker_id is None:
        release_worker_leases(spec, plan.properties)
    return code
