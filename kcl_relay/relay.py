"""The two ways to relay: a Kinesis stream through a KCL worker, or an NDJSON file through the same pipeline."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from kcl_relay import rates
from kcl_relay.kcl import consumer, launcher
from kcl_relay.kcl.adapter import find_adapter_jar
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.daemon import find_jars, find_java
from kcl_relay.kcl.leases import (
    LeaseTables,
    delete_application_tables,
    other_workers,
    prepare_leases,
    relayed_shards,
    release_leases,
)
from kcl_relay.kcl.properties import INITIAL_POSITION, build_properties
from kcl_relay.kcl.supervisor import WorkerPlan, application_dir, make_state_dir, run_worker, say
from kcl_relay.kcl.worker_id import stable_worker_id
from kcl_relay.logs import quiet_http_libraries
from kcl_relay.options import ProcessorOptions
from kcl_relay.pipeline import FlushStats, Pipeline, PipelineOptions, settle_heap, target_for
from kcl_relay.sink.admin import check_reachable, table_state
from kcl_relay.sink.base import Sink
from kcl_relay.sink.ddl import MissingPrivilege, check_access
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.options import sink_options
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import open_sink
from kcl_relay.source import dynamodb_streams, kinesis
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
    check_access(target, spec.route_tables)  # a privilege missing: one line now, not retries later

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
    except MissingPrivilege:  # one line and exit code 2: nothing changes until an admin acts
        raise
    except Exception as error:  # the sink retried transient failures already: this one is final
        say(f"error: the target failed after {totals.records} records: {type(error).__name__}: {error}")
        return 1
    finally:
        pipeline.close()
    elapsed = time.monotonic() - started
    per_second = rates.rate(totals.records, elapsed)  # none over a handful of records
    shown_rate = f" ({per_second:.0f}/s)" if per_second is not None else ""
    say(
        f"replayed {totals.records} records from {path} in {elapsed:.2f} s{shown_rate}: "
        f"{totals.upserted} upserts, {totals.deleted} deletes, {totals.stale} stale, {totals.ttl_ignored} ttl ignored, "
        f"{totals.dead_letters} dead letters"
    )
    return 0


def application_name(spec: SourceSpec, target: TargetSpec) -> str:
    """The KCL application, i.e. the lease table, of relaying `spec` into `target`; `kcl-relay status` finds it so."""
    return spec.application_name(target.table, target.identity())


def check_target_mapping(spec: SourceSpec, target: TargetSpec) -> None:
    """A mapping that would change the one the target table was filled with: one line, before anything starts."""
    if not spec.mapping or spec.route_tables:  # routed tables are named by the records: checked as they come
        return
    from kcl_relay.mapping.spec import MappingError, load_mapping
    from kcl_relay.sink.mapped_table import check_mapping

    try:
        check_mapping(target, load_mapping(spec.mapping).for_table(target.table))
    except MappingError as error:
        raise SourceError(str(error)) from None


def plan_worker(
    spec: SourceSpec, target: TargetSpec, properties: dict[str, str] | None = None, guard_target: bool = True
) -> WorkerPlan:
    """Validate everything a worker needs before anything starts; SetupError/SourceError otherwise.

    `guard_target`: refuse to resume checkpoints into a missing or empty target (off for a full load, which refills
    the table itself before the stream's records matter).
    """
    quiet_http_libraries(spec.log_level)
    java, jars = find_java(), find_jars()
    adapter_jar = find_adapter_jar(jars) if spec.is_dynamodb_streams else None
    # None: the stock MultiLangDaemon (KCL_RELAY_DAEMON=multilang)
    launcher_classes = launcher.for_run(jars, adapter_jar)
    check_reachable(target)
    check_target_mapping(spec, target)
    check_access(target, spec.route_tables)
    application = application_name(spec, target)
    props = build_properties(spec, application)
    if spec.is_dynamodb_streams:
        table_stream, shards = dynamodb_streams.prepare_stream(spec)
        seqno_shard = (
            dynamodb_streams.shard_of_sequence_number(spec, table_stream.arn, shards, spec.seqno)
            if spec.seqno
            else None
        )
        say(f"DynamoDB stream {table_stream.arn} ({table_stream.view_type}) of table {table_stream.table}")
    else:
        shards = kinesis.prepare_stream(spec)
        seqno_shard = kinesis.shard_of_sequence_number(spec, shards, spec.seqno) if spec.seqno else None
    if properties:  # run --properties: the user's file wins, but the processor and its protocol needs are ours
        props = {**props, **properties, **{key: props[key] for key in PROCESSOR_KEYS}}
    if spec.is_dynamodb_streams:  # the stream's ARN, and DynamoDB Streams' own limits, whatever the file says
        props |= dynamodb_streams.kcl_properties(table_stream, props)
    tables = LeaseTables.of(props)
    origin = "set by app= / applicationName" if spec.app else f"derived from {spec.relay_identity(target.identity())}"
    say(f"application {props['applicationName']} (lease table {tables.leases}), {origin}")
    if spec.reset:
        reset_application(spec, tables)
        consumer.reset(spec, props, say)
    elif guard_target:
        refuse_emptied_target(spec, target, tables)
    consumer.prepare(spec, props, say)  # consumer=fanout: the application's stream consumer, registered once
    lasting_worker_id = True
    if not (props.get("workerId") or props.get("workerIdentifier")):
        # Stable per host and slot, so a restart finds its own leases; random only when no slot can be locked.
        folder = application_dir(props["applicationName"])
        host = socket.gethostname()
        if folder.name.endswith(f"-uid{os.getuid()}"):  # slots apart from another user's workers: ids apart too
            host += f"-uid{os.getuid()}"
        stable = stable_worker_id(folder, host)
        props["workerId"] = stable or f"{host}-{uuid.uuid4().hex[:12]}"
        if stable is None:
            lasting_worker_id = False
            say(f"no worker slot could be locked in {folder}: a random worker id")
    if not spec.is_dynamodb_streams:  # the adapter's leases are its own: the KCL writes them
        prepare_lease_table(spec, props)
    state_dir = make_state_dir(props["applicationName"])
    processor = ProcessorConfig(
        target_url=target.url.render_as_string(hide_password=False),
        table=target.qualified_table,
        state_dir=str(state_dir),
        seqno_shard=seqno_shard,
        # the processors' options as the URL gave them, but for the pause after a read at the tip (the consumer's)
        **{field.name: getattr(spec, field.name) for field in dataclasses.fields(ProcessorOptions)}
        | {"idle_sleep": consumer.processor_idle_sleep(spec, props)},
    )
    aws_env = {"AWS_REGION": spec.region}
    if spec.credentials:
        aws_env |= {
            "AWS_ACCESS_KEY_ID": spec.credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": spec.credentials.secret_access_key,
        }

    def open_shards() -> set[str]:
        if spec.is_dynamodb_streams:
            return kinesis.open_shard_ids(dynamodb_streams.describe_shards(spec, props["streamName"]))
        assert spec.stream is not None  # prepare_stream above has checked that stream
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
        metrics_host=spec.metrics_host,
        metrics_port=spec.metrics_port,
        lasting_worker_id=lasting_worker_id,
        launcher=launcher_classes,
        launcher_main=launcher.STREAMS_MAIN_CLASS if adapter_jar else None,
        launcher_classpath=(adapter_jar,) if adapter_jar else (),
    )


def reset_application(spec: SourceSpec, tables: LeaseTables) -> None:
    """reset=true: forget the application's checkpoints, so every shard starts at `start` again."""
    try:
        deleted = delete_application_tables(kinesis.client(spec, "dynamodb"), tables)
    except (BotoCoreError, ClientError, TimeoutError) as error:
        raise SourceError(f"reset=true could not delete lease table {tables.leases}: {describe_error(error)}") from None
    if deleted:
        say(f"reset=true: deleted {', '.join(deleted)}; every shard starts at start={spec.start} again")
    else:
        say(f"reset=true: lease table {tables.leases} did not exist; nothing to reset")


def refuse_emptied_target(spec: SourceSpec, target: TargetSpec, tables: LeaseTables) -> None:
    """Checkpoints say records were relayed, but the target lost them (dropped table, deleted SQLite file): stop.

    Resuming after those checkpoints would leave the table silently without everything relayed before. An empty
    table counts only when its tombstones and dead letters are empty too (every item deleted is a real state).
    """
    if spec.route_tables:  # the target tables are named by the records: nothing to look at before they come
        return
    try:
        relayed = relayed_shards(kinesis.client(spec, "dynamodb"), tables.leases)
    except (BotoCoreError, ClientError) as error:
        say(f"could not read lease table {tables.leases} ({describe_error(error)}); the KCL will tell")
        return
    if not relayed:
        return
    state = table_state(target)
    if state == "rows":
        return
    if state == "empty":
        companions = (table_state(target, target.table + suffix) for suffix in (TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX))
        if any(companion == "rows" for companion in companions):
            return
    raise SourceError(
        f"target table {target.qualified_table} is {state}, but lease table {tables.leases} has checkpoints of "
        f"{len(relayed)} shard(s) already relayed: resuming would leave it without those records; to relay again "
        "from scratch add reset=true (properties file: kclrelay.reset = true, or kcl-relay run --reset)"
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


class LeaseHandBack:
    """At a graceful stop: hand this worker's leases to the other workers, or keep them for its own restart.

    Decided once, at the first call: handed back (the KCL's evictLease, the worker metrics entry removed first) when
    another worker of the application may be alive, so it takes the shards over at its next lease assignment
    instead of after failover-time; or when the id is one no later run carries (a random one). Kept when this
    worker is alone and its id lasts (the stable default HOST-SLOT, or worker-id): a restart finds its own leases
    and resumes at once. The supervisor calls it as soon as every processor has checkpointed, again every few
    seconds while the JVM shuts down (the leader may assign a released lease right back), and once after it exited.
    """

    def __init__(self, spec: SourceSpec, props: dict[str, str], lasting_id: bool) -> None:
        self.spec, self.tables, self.lasting_id = spec, LeaseTables.of(props), lasting_id
        self.worker = props.get("workerId") or props["workerIdentifier"]
        self.keep: bool | None = None  # None: not decided yet
        self.others: set[str] = set()
        self.released = 0
        self.failed = False

    def __call__(self) -> None:
        if self.keep or self.failed:
            return
        dynamodb = kinesis.client(self.spec, "dynamodb")
        try:
            if self.keep is None:
                self.others = other_workers(dynamodb, self.tables, self.worker) if self.lasting_id else set()
                self.keep = self.lasting_id and not self.others
                if self.keep:
                    say(
                        f"kept the leases of worker {self.worker}: no other worker is alive; "
                        "a restart with this id resumes at once"
                    )
                    return
            released = release_leases(dynamodb, self.tables, self.worker)
        except (BotoCoreError, ClientError) as error:
            self.failed = True
            reason = describe_error(error)
            say(f"could not hand back the leases of worker {self.worker} ({reason}); they expire instead")
            return
        if released:
            self.released += released
            to = f" to the other workers ({', '.join(sorted(self.others))})" if self.others else ""
            say(f"handed back {released} leases of worker {self.worker}{to}")


def run_stream(spec: SourceSpec, target: TargetSpec, properties: dict[str, str] | None = None) -> int:
    plan = plan_worker(spec, target, properties)
    if plan.launcher is not None:  # the launcher hands the leases back in the JVM (kcl_relay/java GracefulStop)
        return run_worker(plan)
    hand_back = LeaseHandBack(spec, plan.properties, lasting_id=plan.lasting_worker_id)
    plan.hand_back = hand_back
    code = run_worker(plan)
    if code == 0:  # stopped gracefully: every processor flushed and checkpointed, the JVM is gone
        hand_back()
    return code
