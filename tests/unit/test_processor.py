"""RelayProcessor driven by amazon-kclpy's own message objects, a fake checkpointer and a SQLite target."""

from __future__ import annotations

import base64
import io
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from amazon_kclpy.dispatch import message_decode
from amazon_kclpy.kcl import CheckpointError

import kcl_relay.kcl.processor as processor_module
from kcl_relay.cdc import speedups
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.processor import CHECKPOINT_RETRIES, RelayProcessor, StartFilter
from kcl_relay.kcl.status import ShardStatus, latest_by_shard, read_statuses
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.base import Sink
from kcl_relay.sink.target import TargetSpec, parse_target
from tests.support.records import cdc_record

SHARD = "shardId-000000000001"
OTHER_SHARD = "shardId-000000000002"
T0_MILLIS = 1_735_689_600_000


# ---- amazon-kclpy messages, decoded the way KCLProcess decodes the MultiLangDaemon's JSON lines --------------


def kcl_message(**fields: Any) -> Any:
    return json.loads(json.dumps(fields), object_hook=message_decode)


def cdc(op: str, ident: str, version: int, ttl: bool = False, **attributes: str) -> bytes:
    """The JSON of one CDC record of key {"id": ident} at T0 + `version` ms."""
    return json.dumps(
        cdc_record(op, ident, (T0_MILLIS + version) * 1000, table="orders", ttl=ttl, **attributes)
    ).encode()


def kinesis_record(data: bytes, seq: int | str, sub: int = 0) -> dict[str, Any]:
    return {
        "action": "record",
        "data": base64.b64encode(data).decode("ascii"),
        "sequenceNumber": str(seq),
        "subSequenceNumber": sub,
        "partitionKey": "pk",
        "approximateArrivalTimestamp": T0_MILLIS,
    }


def initialize(shard: str = SHARD, sequence_number: str | None = "TRIM_HORIZON") -> Any:
    return kcl_message(action="initialize", shardId=shard, sequenceNumber=sequence_number, subSequenceNumber=0)


def process_records(records: Sequence[dict[str, Any]], millis_behind: int = 0) -> Any:
    return kcl_message(action="processRecords", records=list(records), millisBehindLatest=millis_behind)


def inserts(*seqs: int) -> list[dict[str, Any]]:
    return [kinesis_record(cdc("INSERT", f"k{seq}", seq, v=str(seq)), seq) for seq in seqs]


class Checkpointer:
    """Records checkpoint calls; raises the queued CheckpointError values first; can look at the database."""

    def __init__(self, errors: Sequence[str] = (), on_checkpoint: Callable[[], Any] | None = None) -> None:
        self.calls: list[tuple[str | None, int | None]] = []
        self.errors = list(errors)
        self.on_checkpoint = on_checkpoint
        self.seen: list[Any] = []

    def checkpoint(self, sequence_number: str | None = None, sub_sequence_number: int | None = None) -> None:
        self.calls.append((sequence_number, sub_sequence_number))
        if self.on_checkpoint is not None:
            self.seen.append(self.on_checkpoint())
        if self.errors:
            raise CheckpointError(self.errors.pop(0))


class FailingSink(Sink):
    def ensure_table(self, key_types: Any) -> None:
        raise RuntimeError("database down")

    def apply(self, events: Any) -> Any:
        raise RuntimeError("database down")

    def dead_letter(self, letters: Any) -> None:
        raise RuntimeError("database down")

    def close(self) -> None:
        pass


# ---- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def target(sqlite_url: str) -> TargetSpec:
    return parse_target(sqlite_url, "t")


@pytest.fixture
def make(sqlite_url: str, state_dir: Path) -> Callable[..., RelayProcessor]:
    def factory(**options: Any) -> RelayProcessor:
        options = {"batch_size": 100, "buffer_time": 60.0, **options}
        return RelayProcessor(ProcessorConfig(target_url=sqlite_url, table="t", state_dir=str(state_dir), **options))

    return factory


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The processor's backoff sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(processor_module.time, "sleep", slept.append)
    return slept


def table_rows(target: TargetSpec) -> dict[str, str]:
    _, tables = run_sql(target, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 't'")
    if not tables:
        return {}
    _, found = run_sql(target, 'SELECT pk, data FROM "t"')
    return dict(found)


def tombstones(target: TargetSpec) -> int:
    _, ((count,),) = run_sql(target, 'SELECT count(*) FROM "t__tombstones"')
    return count


def status_of(state_dir: Path, shard: str = SHARD) -> ShardStatus:
    return latest_by_shard(read_statuses(state_dir))[shard]


def started(proc: RelayProcessor, shard: str = SHARD, sequence_number: str | None = "TRIM_HORIZON") -> RelayProcessor:
    initialize(shard, sequence_number).dispatch(None, proc)
    return proc


# ---- checkpoints follow the database --------------------------------------------------------------------------


def test_checkpoint_only_after_the_rows_are_in_the_database(
    make: Callable[..., RelayProcessor], target: TargetSpec
) -> None:
    proc = started(make(batch_size=3))
    checkpointer = Checkpointer(on_checkpoint=lambda: table_rows(target))
    process_records(inserts(101, 102)).dispatch(checkpointer, proc)
    assert checkpointer.calls == [], "two of three records: not due, nothing to checkpoint"
    assert table_rows(target) == {}
    last = kinesis_record(cdc("INSERT", "k103", 103, v="103"), 103, sub=2)
    process_records([last]).dispatch(checkpointer, proc)
    assert checkpointer.calls == [("103", 2)], "at the last flushed record, with its sub-sequence number"
    (rows_at_checkpoint,) = checkpointer.seen
    assert set(rows_at_checkpoint) == {'{"id":"k101"}', '{"id":"k102"}', '{"id":"k103"}'}


def test_buffer_time_zero_flushes_and_checkpoints_every_read(
    make: Callable[..., RelayProcessor], target: TargetSpec
) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer(on_checkpoint=lambda: len(table_rows(target)))
    process_records(inserts(1, 2)).dispatch(checkpointer, proc)
    process_records(inserts(3)).dispatch(checkpointer, proc)
    process_records([]).dispatch(checkpointer, proc)  # an empty read checkpoints nothing
    assert checkpointer.calls == [("2", 0), ("3", 0)]
    assert checkpointer.seen == [2, 3]


@pytest.mark.parametrize(
    ("idle_sleep", "buffer_time", "millis_behind", "flushed"),
    [
        (0.5, 0.5, 0, True),  # at the tip the next delivery comes after idle-sleep: buffer-time would be exceeded
        (0.5, 1.0, 0, False),  # idle-sleep within buffer-time: the next delivery can still join this batch
        (0.5, 0.5, 60_000, False),  # a backlog: the next delivery comes after the KCL's 200 ms floor
        (0.1, 0.1, 60_000, True),  # below the floor: never worth waiting for the next delivery
        (0.5, 0.5, 499, True),  # below idle-sleep counts as the tip, as the KCL itself decides
    ],
)
def test_a_record_never_waits_a_whole_delivery_past_buffer_time(
    make: Callable[..., RelayProcessor],
    target: TargetSpec,
    idle_sleep: float,
    buffer_time: float,
    millis_behind: int,
    flushed: bool,
) -> None:
    proc = started(make(idle_sleep=idle_sleep, buffer_time=buffer_time))
    checkpointer = Checkpointer()
    process_records(inserts(1), millis_behind=millis_behind).dispatch(checkpointer, proc)
    assert (checkpointer.calls == [("1", 0)]) is flushed
    assert (len(table_rows(target)) == 1) is flushed


def test_records_not_yet_due_are_not_checkpointed(make: Callable[..., RelayProcessor], target: TargetSpec) -> None:
    proc = started(make())
    checkpointer = Checkpointer()
    for seq in range(1, 6):
        process_records(inserts(seq)).dispatch(checkpointer, proc)
        process_records([]).dispatch(checkpointer, proc)
    assert checkpointer.calls == []
    assert table_rows(target) == {}
    assert proc.pipeline.pending == 5


def test_lease_lost_never_checkpoints(make: Callable[..., RelayProcessor], target: TargetSpec, state_dir: Path) -> None:
    proc = started(make())
    checkpointer = Checkpointer()
    process_records(inserts(1, 2)).dispatch(checkpointer, proc)
    kcl_message(action="leaseLost").dispatch(checkpointer, proc)
    assert checkpointer.calls == []
    assert table_rows(target) == {}, "the new owner redelivers from the last checkpoint"
    status = status_of(state_dir)
    assert status.lease_lost and not status.ended


def test_shard_ended_flushes_and_checkpoints_without_a_sequence_number(
    make: Callable[..., RelayProcessor], target: TargetSpec, state_dir: Path
) -> None:
    proc = started(make())
    checkpointer = Checkpointer(on_checkpoint=lambda: len(table_rows(target)))
    process_records(inserts(1, 2)).dispatch(checkpointer, proc)
    assert checkpointer.calls == []
    kcl_message(action="shardEnded").dispatch(checkpointer, proc)
    assert checkpointer.calls == [(None, None)]
    assert checkpointer.seen == [2]
    status = status_of(state_dir)
    assert status.ended and status.caught_up
    assert (status.applied, status.records) == (2, 2)


def test_shard_ended_with_nothing_staged_still_checkpoints(make: Callable[..., RelayProcessor]) -> None:
    proc = started(make())
    checkpointer = Checkpointer()
    kcl_message(action="shardEnded").dispatch(checkpointer, proc)
    assert checkpointer.calls == [(None, None)]


def test_shutdown_requested_flushes_and_checkpoints(
    make: Callable[..., RelayProcessor], target: TargetSpec, state_dir: Path
) -> None:
    proc = started(make())
    checkpointer = Checkpointer(on_checkpoint=lambda: len(table_rows(target)))
    process_records(inserts(1, 2, 3)).dispatch(checkpointer, proc)
    assert checkpointer.calls == []
    kcl_message(action="shutdownRequested").dispatch(checkpointer, proc)
    assert checkpointer.calls == [("3", 0)]
    assert checkpointer.seen == [3]
    assert status_of(state_dir).applied == 3


def test_shutdown_requested_with_nothing_new_does_not_checkpoint(make: Callable[..., RelayProcessor]) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer()
    process_records(inserts(1)).dispatch(checkpointer, proc)
    kcl_message(action="shutdownRequested").dispatch(checkpointer, proc)
    assert checkpointer.calls == [("1", 0)], "the flushed record was checkpointed once, nothing more to do"


@pytest.mark.parametrize("how", ["process_records", "shutdown_requested", "shard_ended"])
def test_a_failing_database_exits_without_checkpoint(
    make: Callable[..., RelayProcessor], state_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(processor_module, "open_sink", lambda target, **options: FailingSink())
    proc = started(make(buffer_time=0.0 if how == "process_records" else 60.0))
    checkpointer = Checkpointer()
    with pytest.raises(SystemExit) as exited:
        process_records(inserts(1, 2)).dispatch(checkpointer, proc)
        if how == "shutdown_requested":
            kcl_message(action="shutdownRequested").dispatch(checkpointer, proc)
        elif how == "shard_ended":
            kcl_message(action="shardEnded").dispatch(checkpointer, proc)
    assert exited.value.code == 1
    assert checkpointer.calls == []
    status = status_of(state_dir)
    assert not status.caught_up and status.applied == 0


def test_a_decoder_bug_exits_without_checkpoint_and_dead_letters_nothing(
    make: Callable[..., RelayProcessor], target: TargetSpec, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of ours is a crash: amazon-kclpy would swallow an exception, so the processor exits; the KCL redelivers."""

    def buggy(record: RawRecord) -> Any:
        raise KeyError("dynamodb")

    monkeypatch.setattr("kcl_relay.pipeline.decode", buggy)
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer()
    with pytest.raises(SystemExit) as exited:
        process_records(inserts(1, 2)).dispatch(checkpointer, proc)
    assert exited.value.code == 1
    assert checkpointer.calls == []
    assert table_rows(target) == {}
    _, letters = run_sql(target, "SELECT name FROM sqlite_master WHERE name = 't__deadletters'")
    if letters:
        assert run_sql(target, 'SELECT count(*) FROM "t__deadletters"')[1] == [(0,)]
    status = status_of(state_dir)
    assert status.failed and status.dead_letters == 0 and status.records == 0


def test_a_real_sqlite_failure_exits_without_checkpoint(tmp_path: Path, state_dir: Path) -> None:
    config = ProcessorConfig(
        target_url=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}",
        table="t",
        state_dir=str(state_dir),
        buffer_time=0,
    )
    proc = started(RelayProcessor(config))
    checkpointer = Checkpointer()
    with pytest.raises(SystemExit) as exited:
        process_records(inserts(1)).dispatch(checkpointer, proc)
    assert exited.value.code == 1
    assert checkpointer.calls == []


# ---- checkpoint errors ----------------------------------------------------------------------------------------


def test_throttled_checkpoints_are_retried(make: Callable[..., RelayProcessor], sleeps: list[float]) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer(errors=["ThrottlingException", "ThrottlingException"])
    process_records(inserts(1, 2)).dispatch(checkpointer, proc)
    assert checkpointer.calls == [("2", 0)] * 3
    assert len(sleeps) == 2 and sleeps[0] > 0 and sleeps[1] > sleeps[0], "backoff grows"


def test_throttling_that_never_ends_raises(make: Callable[..., RelayProcessor], sleeps: list[float]) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer(errors=["ThrottlingException"] * (CHECKPOINT_RETRIES + 1))
    with pytest.raises(CheckpointError) as raised:
        process_records(inserts(1)).dispatch(checkpointer, proc)
    assert raised.value.value == "ThrottlingException"
    assert len(checkpointer.calls) == CHECKPOINT_RETRIES
    assert len(sleeps) == CHECKPOINT_RETRIES - 1


@pytest.mark.parametrize("error", ["ShutdownException", "InvalidStateException"])
def test_a_lost_lease_at_checkpoint_is_tolerated(
    make: Callable[..., RelayProcessor], target: TargetSpec, sleeps: list[float], error: str
) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer(errors=[error])
    process_records(inserts(1)).dispatch(checkpointer, proc)  # does not raise
    assert checkpointer.calls == [("1", 0)]
    assert sleeps == []
    assert len(table_rows(target)) == 1


def test_other_checkpoint_errors_raise(make: Callable[..., RelayProcessor], sleeps: list[float]) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer(errors=["KinesisClientLibDependencyException"])
    with pytest.raises(CheckpointError):
        process_records(inserts(1)).dispatch(checkpointer, proc)
    assert len(checkpointer.calls) == 1 and sleeps == []


# ---- status files ---------------------------------------------------------------------------------------------


@pytest.fixture
def every_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write the status file on every call, so that each call's status can be read back."""
    monkeypatch.setattr(processor_module, "STATUS_INTERVAL", 0.0)


def test_initialize_writes_a_status(make: Callable[..., RelayProcessor], state_dir: Path) -> None:
    started(make())
    status = status_of(state_dir)
    assert (status.applied, status.records, status.caught_up, status.ended, status.lease_lost) == (
        0,
        0,
        False,
        False,
        False,
    )
    assert status.updated_at > 0


@pytest.mark.usefixtures("every_status")
def test_status_counts(make: Callable[..., RelayProcessor], state_dir: Path) -> None:
    proc = started(make(buffer_time=0.0))
    checkpointer = Checkpointer()
    before = time.time()
    records = [
        *inserts(1, 2),
        kinesis_record(b"not json", 3),
        kinesis_record(cdc("REMOVE", "k1", 10), 4),
        kinesis_record(cdc("MODIFY", "k2", 0, v="old"), 5),  # older than the INSERT: coalesced away
    ]
    process_records(records, millis_behind=5000).dispatch(checkpointer, proc)
    status = status_of(state_dir)
    assert (status.records, status.applied, status.dead_letters) == (5, 2, 1)  # k1 deleted, k2 inserted
    assert status.millis_behind == 5000
    assert not status.caught_up
    assert status.first_applied_at is not None and status.first_applied_at >= before
    first = status.first_applied_at
    process_records(inserts(6)).dispatch(checkpointer, proc)
    status = status_of(state_dir)
    assert (status.records, status.applied, status.first_applied_at) == (6, 3, first)
    # one database batch per flush, each timed into the apply latency histogram; SQLite did not need a retry
    assert status.apply_count == sum(status.apply_buckets) == 2
    assert 0 < status.apply_seconds < 60
    assert status.retries == 0


@pytest.mark.usefixtures("every_status")
@pytest.mark.skipif(speedups.available is None, reason="the C extension is not built")
def test_fast_path_faults_reach_the_status_file(
    make: Callable[..., RelayProcessor], target: TargetSpec, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*_args: Any) -> Any:
        raise SystemError("a bug in C")

    module = speedups.available
    assert module is not None
    monkeypatch.setattr(speedups, "fallbacks", dict.fromkeys(speedups.PATHS, 0))
    monkeypatch.setattr(speedups, "native", SimpleNamespace(**{**vars(module), "decode_record": fails}))
    proc = started(make(buffer_time=0.0))
    process_records(inserts(1, 2, 3)).dispatch(Checkpointer(), proc)
    assert len(table_rows(target)) == 3, "the reference decoded them"
    assert status_of(state_dir).fastpath_fallbacks == {"decode_record": 3}


@pytest.mark.usefixtures("every_status")
@pytest.mark.parametrize(
    ("records", "millis_behind", "buffer_time", "caught_up"),
    [
        ([], 0, 0.0, True),  # an empty read at the tip, nothing buffered
        ([], 1500, 0.0, False),  # behind the tip
        (inserts(1), 0, 0.0, False),  # records read: there may be more
        ([], 0, 60.0, False),  # something still buffered (see below)
    ],
)
def test_caught_up_only_for_an_empty_read_at_the_tip_with_nothing_buffered(
    make: Callable[..., RelayProcessor],
    state_dir: Path,
    records: list[dict[str, Any]],
    millis_behind: int,
    buffer_time: float,
    caught_up: bool,
) -> None:
    proc = started(make(buffer_time=buffer_time))
    checkpointer = Checkpointer()
    if buffer_time:
        process_records(inserts(1), millis_behind=0).dispatch(checkpointer, proc)
        assert proc.pipeline.pending == 1
    process_records(records, millis_behind=millis_behind).dispatch(checkpointer, proc)
    assert status_of(state_dir).caught_up is caught_up
    assert status_of(state_dir).millis_behind == millis_behind


def test_caught_up_is_written_at_once(make: Callable[..., RelayProcessor], state_dir: Path) -> None:
    proc = started(make(buffer_time=0.0))
    process_records(inserts(1)).dispatch(Checkpointer(), proc)
    process_records([]).dispatch(Checkpointer(), proc)
    status = status_of(state_dir)
    assert status.caught_up and status.applied == 1


def test_caught_up_is_withdrawn_at_once(
    make: Callable[..., RelayProcessor], state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = SimpleNamespace(monotonic=lambda: 1000.0, time=time.time, sleep=time.sleep)  # all calls in 1 instant
    monkeypatch.setattr(processor_module, "time", frozen)
    proc = started(make())
    process_records([]).dispatch(Checkpointer(), proc)
    assert status_of(state_dir).caught_up
    process_records(inserts(1)).dispatch(Checkpointer(), proc)
    assert proc.pipeline.pending == 1
    assert not status_of(state_dir).caught_up


# ---- start=seqno-at / seqno-after -----------------------------------------------------------------------------


def test_start_filter() -> None:
    def record(seq: str) -> RawRecord:
        return RawRecord(b"", Position(SHARD, seq))

    inclusive = StartFilter("100", inclusive=True)
    assert [inclusive.keep(record(s)) for s in ("9", "99", "100", "101", "5")] == [False, False, True, True, True]
    exclusive = StartFilter("100", inclusive=False)
    assert [exclusive.keep(record(s)) for s in ("99", "100", "101", "102")] == [False, False, True, True]
    assert exclusive.done


@pytest.mark.parametrize(
    ("start", "shard", "checkpoint", "kept"),
    [
        ("seqno-at", SHARD, "TRIM_HORIZON", [100, 101]),
        ("seqno-after", SHARD, "TRIM_HORIZON", [101]),
        ("seqno-at", SHARD, "LATEST", [100, 101]),
        ("seqno-at", SHARD, None, [100, 101]),
        ("seqno-at", OTHER_SHARD, "TRIM_HORIZON", [98, 99, 100, 101]),  # not the shard holding the seqno
        ("seqno-after", SHARD, "97", [98, 99, 100, 101]),  # a checkpoint wins over the start option
        ("earliest", SHARD, "TRIM_HORIZON", [98, 99, 100, 101]),
    ],
)
def test_seqno_start_on_the_configured_shard_without_checkpoint(
    make: Callable[..., RelayProcessor],
    target: TargetSpec,
    start: str,
    shard: str,
    checkpoint: str | None,
    kept: list[int],
) -> None:
    seqno = "100" if start.startswith("seqno") else None
    proc = started(make(buffer_time=0.0, start=start, seqno=seqno, seqno_shard=SHARD), shard, checkpoint)
    checkpointer = Checkpointer()
    process_records(inserts(98, 99)).dispatch(checkpointer, proc)
    process_records(inserts(100, 101)).dispatch(checkpointer, proc)
    assert set(table_rows(target)) == {f'{{"id":"k{seq}"}}' for seq in kept}
    assert checkpointer.calls[-1] == ("101", 0)
    if kept[0] >= 100:
        assert checkpointer.calls == [("101", 0)], "a read whose records were all skipped checkpoints nothing"


# ---- the rest -------------------------------------------------------------------------------------------------


def test_ttl_ignore_reaches_the_pipeline(make: Callable[..., RelayProcessor], target: TargetSpec) -> None:
    proc = started(make(buffer_time=0.0, ttl="ignore"))
    checkpointer = Checkpointer()
    process_records(inserts(1)).dispatch(checkpointer, proc)
    process_records([kinesis_record(cdc("REMOVE", "k1", 50, ttl=True), 2)]).dispatch(checkpointer, proc)
    assert set(table_rows(target)) == {'{"id":"k1"}'}
    assert checkpointer.calls == [("1", 0), ("2", 0)]


def test_tombstone_retention_is_honoured(make: Callable[..., RelayProcessor], target: TargetSpec) -> None:
    """tombstone-retention is seconds in the config and reaches the sink as a duration (purge works)."""
    kept = started(make(buffer_time=0.0))
    process_records([kinesis_record(cdc("REMOVE", "gone", 1), 1)]).dispatch(Checkpointer(), kept)
    assert tombstones(target) == 1
    purged = started(make(buffer_time=0.0, tombstone_retention=0.0))
    process_records([kinesis_record(cdc("REMOVE", "gone2", 1), 2)]).dispatch(Checkpointer(), purged)
    assert tombstones(target) == 0, "a retention of 0 s purges the tombstones at once"


def test_retry_timeout_reaches_the_sink(make: Callable[..., RelayProcessor]) -> None:
    """retry-timeout: how long the processor rides out a database outage before it stops without checkpoint."""
    sink = make(retry_timeout=42.0)._open_sink(None)
    try:
        assert sink.executor.retry.timeout == 42.0  # type: ignore[attr-defined]
    finally:
        sink.close()


def test_nothing_is_written_to_stdout(make: Callable[..., RelayProcessor], capsys: pytest.CaptureFixture[str]) -> None:
    """stdout is the MultiLangDaemon protocol channel."""
    proc = started(make(batch_size=2))
    checkpointer = Checkpointer(errors=["ShutdownException"])
    process_records([*inserts(1, 2), kinesis_record(b"garbage", 3)]).dispatch(checkpointer, proc)
    process_records([]).dispatch(checkpointer, proc)
    kcl_message(action="shutdownRequested").dispatch(checkpointer, proc)
    kcl_message(action="leaseLost").dispatch(checkpointer, proc)
    assert capsys.readouterr().out == ""
    assert checkpointer.calls == [("3", 0)]


def test_main_keeps_stdout_for_the_protocol(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, state_dir: Path, target: TargetSpec
) -> None:
    """main() as the MultiLangDaemon runs it: protocol lines on stdout only, a stray print goes to stderr."""
    config = ProcessorConfig(
        target_url=sqlite_url, table="t", state_dir=str(state_dir), buffer_time=0.0, log_level="info"
    )
    monkeypatch.setenv("KCL_RELAY_PROCESSOR", config.to_env()["KCL_RELAY_PROCESSOR"])
    script = [
        {"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0},
        {"action": "processRecords", "records": inserts(1, 2), "millisBehindLatest": 0},
        {"action": "checkpoint", "sequenceNumber": "2", "subSequenceNumber": 0},  # the daemon's answer
        {"action": "shutdownRequested"},
    ]
    daemon_in = io.StringIO("".join(json.dumps(line) + "\n" for line in script))
    protocol, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", protocol)
    monkeypatch.setattr(sys, "stderr", stderr)
    real_process = processor_module.kcl.KCLProcess
    monkeypatch.setattr(
        processor_module.kcl,
        "KCLProcess",
        lambda proc, output_file: real_process(proc, input_file=daemon_in, output_file=output_file, error_file=stderr),
    )
    real_open_sink = processor_module.open_sink

    def chatty_open_sink(spec: TargetSpec, **options: Any) -> Sink:
        print("stray output of some library")
        return real_open_sink(spec, **options)

    monkeypatch.setattr(processor_module, "open_sink", chatty_open_sink)
    signals: list[tuple[int, Any]] = []
    monkeypatch.setattr(processor_module.signal, "signal", lambda sig, handler: signals.append((sig, handler)))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        processor_module.main()
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert [json.loads(line) for line in protocol.getvalue().splitlines() if line.strip()] == [
        {"action": "status", "responseFor": "initialize"},
        {"action": "checkpoint", "sequenceNumber": "2", "subSequenceNumber": 0},
        {"action": "status", "responseFor": "processRecords"},
        {"action": "status", "responseFor": "shutdownRequested"},
    ]
    assert "stray output of some library" in stderr.getvalue()
    assert set(table_rows(target)) == {'{"id":"k1"}', '{"id":"k2"}'}
    assert sorted(sig for sig, _ in signals) == sorted([signal.SIGINT, signal.SIGTERM])
    assert all(handler is signal.SIG_IGN for _, handler in signals)
    assert "shutdown requested" in (state_dir / "processor.log").read_text()
