"""The supervisor's pieces that run without Java: caught_up, progress lines, the state directory."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import kcl_relay.kcl.supervisor as supervisor
from kcl_relay.kcl.status import ShardStatus, latest_by_shard, read_statuses, write_status
from kcl_relay.kcl.supervisor import (
    HEARTBEAT_INTERVAL,
    KEEP_STATE_DIRS,
    PROGRESS_INTERVAL,
    Progress,
    caught_up,
    make_state_dir,
    processors_done,
)

A, B, C = "shardId-000000000000", "shardId-000000000001", "shardId-000000000002"


def status(shard: str, **fields: Any) -> ShardStatus:
    return ShardStatus(shard_id=shard, **fields)


# ---- caught_up ------------------------------------------------------------------------------------------------


def test_caught_up_needs_every_open_shard() -> None:
    statuses = {A: status(A, caught_up=True), B: status(B, caught_up=True)}
    assert caught_up(statuses, {A, B})
    assert not caught_up(statuses, {A, B, C}), "a shard without status is not caught up"
    assert not caught_up({A: status(A, caught_up=True), B: status(B)}, {A, B})


def test_an_ended_shard_counts_as_caught_up() -> None:
    assert caught_up({A: status(A, ended=True), B: status(B, caught_up=True)}, {A, B})


def test_no_open_shards_is_never_caught_up() -> None:
    assert not caught_up({A: status(A, caught_up=True)}, set())
    assert not caught_up({}, set())


def test_statuses_of_other_shards_do_not_matter() -> None:
    assert caught_up({A: status(A, caught_up=True), B: status(B)}, {A})


# ---- processors_done (a graceful stop hands the leases back once it holds) ---------------------------------------


def test_processors_done_when_every_shard_stopped_after_the_stop() -> None:
    statuses = {A: status(A, stopped=True, updated_at=11.0), B: status(B, ended=True, updated_at=5.0)}
    assert processors_done(statuses, since=10.0)
    assert not processors_done(statuses | {C: status(C, updated_at=11.0)}, since=10.0), "C still processing"


def test_processors_done_counts_lost_leases_not_stops_before_the_request() -> None:
    assert processors_done({A: status(A, lease_lost=True, updated_at=1.0)}, since=10.0)
    assert not processors_done({A: status(A, stopped=True, updated_at=9.0)}, since=10.0)


def test_processors_done_needs_a_processor() -> None:
    assert not processors_done({}, since=0.0)


def test_caught_up_from_status_files(tmp_path: Path) -> None:
    write_status(tmp_path, status(A, caught_up=True, applied=3))
    write_status(tmp_path, status(B, ended=True))
    statuses = read_statuses(tmp_path)
    current = latest_by_shard(statuses)
    assert set(current) == {A, B} and current[A].applied == 3
    assert caught_up(statuses, {A, B})


def test_a_second_processor_of_a_shard_keeps_the_first_ones_counts(tmp_path: Path) -> None:
    """A lease that comes back starts a new processor process for the shard: both files count, the newest rules."""
    first = tmp_path / "shards" / f"{A}.111.json"
    first.parent.mkdir(parents=True)
    first.write_text(json.dumps({**asdict(status(A, applied=30, records=30, stopped=True)), "updated_at": 1.0}))
    write_status(tmp_path, status(A, applied=0, caught_up=False))  # the second one, of this process, newer
    statuses = read_statuses(tmp_path)
    assert sum(s.applied for s in statuses.values()) == 30
    assert latest_by_shard(statuses)[A].caught_up is False
    assert not caught_up(statuses, {A})


# ---- Progress -------------------------------------------------------------------------------------------------


class FakeTime:
    """monotonic() and time() that only move when told to."""

    def __init__(self) -> None:
        self.mono = 50.0
        self.wall = 1_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(supervisor, "time", fake)
    return fake


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == "", "progress never goes to stdout"
    return captured.err.splitlines()


def test_nothing_before_the_interval(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    clock.advance(PROGRESS_INTERVAL - 0.1)
    progress.report({A: status(A, applied=10)})
    assert stderr_lines(capsys) == []


def test_waiting_for_leases_is_said_once(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    for _ in range(30):  # two and a half minutes without a lease
        clock.advance(PROGRESS_INTERVAL)
        progress.report({})
    assert stderr_lines(capsys) == [
        "kcl-relay: waiting for shard leases (a fresh lease table costs the KCL up to a minute)"
    ]


def test_progress_line_explains_records_read_and_applied(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    clock.advance(PROGRESS_INTERVAL)
    statuses = {
        A: status(A, applied=100, records=165, dead_letters=2, millis_behind=1200),
        B: status(B, applied=7, records=50, dead_letters=1, millis_behind=300),
        C: status(C, applied=0, ended=True, millis_behind=99_999),  # an ended shard has no lag
    }
    progress.report(statuses)
    assert stderr_lines(capsys) == [
        "kcl-relay: 215 records read (43/s), 107 applied after merging per key, lag 1200 ms, 3 shards, 3 dead letters"
    ]
    clock.advance(2 * PROGRESS_INTERVAL)
    statuses[A].applied, statuses[A].records = 250, 315
    progress.report(statuses)
    assert stderr_lines(capsys) == [
        "kcl-relay: 365 records read (15/s), 257 applied after merging per key, lag 1200 ms, 3 shards, 3 dead letters"
    ]


def test_while_idle_only_a_heartbeat(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    statuses = {A: status(A, applied=10, records=10, millis_behind=0)}
    clock.advance(PROGRESS_INTERVAL)
    progress.report(statuses)
    assert len(stderr_lines(capsys)) == 1
    for _ in range(int(HEARTBEAT_INTERVAL / PROGRESS_INTERVAL) - 1):  # a minute of nothing new: silence
        clock.advance(PROGRESS_INTERVAL)
        statuses[A].millis_behind = 5  # lag alone moves all the time: not news
        progress.report(statuses)
    assert stderr_lines(capsys) == []
    clock.advance(PROGRESS_INTERVAL)
    progress.report(statuses)
    assert stderr_lines(capsys) == [
        "kcl-relay: 10 records read (0/s), 10 applied after merging per key, lag 5 ms, 1 shards, 0 dead letters"
    ]
    clock.advance(PROGRESS_INTERVAL)
    statuses[A].records, statuses[A].applied = 11, 11  # something new: said at the next interval
    progress.report(statuses)
    assert len(stderr_lines(capsys)) == 1


def test_lag_unknown(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    clock.advance(PROGRESS_INTERVAL)
    progress.report({A: status(A), B: status(B, ended=True, millis_behind=5)})
    assert stderr_lines(capsys) == [
        "kcl-relay: 0 records read (0/s), 0 applied after merging per key, lag unknown, 2 shards, 0 dead letters"
    ]


def test_first_records_applied_once(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    clock.advance(1.0)
    statuses = {A: status(A, applied=5, first_applied_at=1_002.5), B: status(B, applied=1, first_applied_at=1_000.5)}
    progress.report(statuses)
    assert stderr_lines(capsys) == ["kcl-relay: first records applied 0.5 s after start"]
    clock.advance(1.0)
    progress.report(statuses)
    assert stderr_lines(capsys) == []


def test_final_summary(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    clock.advance(1.0)
    statuses = {
        A: status(A, applied=80, records=100, dead_letters=4, first_applied_at=1_000.5, last_applied_at=1_000.9)
    }
    progress.report(statuses)
    clock.advance(1.0)
    progress.report(statuses, final=True)
    lines = stderr_lines(capsys)
    assert lines[0] == "kcl-relay: first records applied 0.5 s after start"
    # 100 records in 0.4 s: too few, too short for a rate (it would say 250 records/s of one flush's timing)
    assert lines[1] == "kcl-relay: done: 100 records read, 80 applied after merging per key, 4 dead letters"


@pytest.mark.parametrize(
    ("records", "seconds", "rate"),
    [(999, 10.0, None), (170, 0.0063, None), (50_000, 0.9, None), (1_000, 1.0, "1000"), (40_000, 4.0, "10000")],
)
def test_the_final_rate_needs_enough_records_and_time(
    clock: FakeTime, capsys: pytest.CaptureFixture[str], records: int, seconds: float, rate: str | None
) -> None:
    progress = Progress()
    clock.advance(1.0)
    statuses = {
        A: status(A, applied=records, records=records, first_applied_at=1_000.5, last_applied_at=1_000.5 + seconds)
    }
    progress.report(statuses, final=True)
    summary = stderr_lines(capsys)[-1]
    done = f"kcl-relay: done: {records} records read, {records} applied after merging per key, 0 dead letters"
    assert summary == (done + f"; {rate} records/s from the first applied record to the last" if rate else done)


def test_final_summary_without_anything_applied(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    clock.advance(30)
    progress.report({A: status(A, caught_up=True)}, final=True)
    assert stderr_lines(capsys) == ["kcl-relay: done: 0 records read, 0 applied after merging per key, 0 dead letters"]


def test_final_throughput_counts_until_the_last_applied_record(
    clock: FakeTime, capsys: pytest.CaptureFixture[str]
) -> None:
    progress = Progress()  # wall clock 1000.0
    clock.advance(3.0)  # all 3,000 records applied between 1000.5 and 1002.5, on two shards (processor clocks)
    statuses = {
        A: status(A, applied=2000, records=2000, first_applied_at=1_000.5, last_applied_at=1_002.4),
        B: status(B, applied=1000, records=1000, first_applied_at=1_000.6, last_applied_at=1_002.5),
    }
    progress.report(statuses)
    for _ in range(6):  # nothing changes any more; the supervisor keeps polling
        clock.advance(0.5)
        progress.report(statuses)
    clock.advance(20.0)  # graceful stop of the JVM
    progress.report(statuses, final=True)
    summary = stderr_lines(capsys)[-1]
    assert summary.endswith("; 1500 records/s from the first applied record to the last")


# ---- make_state_dir -------------------------------------------------------------------------------------------


@pytest.fixture
def no_state_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KCL_RELAY_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


@pytest.mark.usefixtures("no_state_env")
def test_state_dir_honours_kcl_relay_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "nested" / "state"
    monkeypatch.setenv("KCL_RELAY_STATE_DIR", str(base))
    first = make_state_dir("kcl-relay-cdc-orders")
    second = make_state_dir("kcl-relay-cdc-orders")
    assert first.parent == base / "kcl-relay-kcl-relay-cdc-orders" == second.parent
    assert first != second, "two workers never share a state directory"
    assert first.is_dir() and second.is_dir()
    assert first.name.startswith("run-")


@pytest.mark.usefixtures("no_state_env")
def test_state_dir_takes_systemds_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    assert make_state_dir("app").parent.parent == tmp_path / "systemd"
    monkeypatch.setenv("KCL_RELAY_STATE_DIR", str(tmp_path / "ours"))
    assert make_state_dir("app").parent.parent == tmp_path / "ours", "ours wins"


@pytest.mark.usefixtures("no_state_env")
def test_state_dir_defaults_to_the_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("KCL_RELAY_STATE_DIR", "")  # empty: not set
    made = make_state_dir("app")
    assert made.parent == tmp_path / "kcl-relay-app" and made.is_dir()


@pytest.mark.usefixtures("no_state_env")
def test_a_long_application_name_keeps_a_bounded_and_distinct_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KCL_RELAY_STATE_DIR", str(tmp_path))
    one, other = make_state_dir("a" * 255).parent, make_state_dir("a" * 254 + "b").parent
    assert one != other, "names alike up to the cut still get folders of their own"
    assert len(one.name) <= 210 and len(other.name) <= 210
    assert one.name.startswith("kcl-relay-" + "a" * 180)


@pytest.mark.usefixtures("no_state_env")
def test_pruning_keeps_the_newest_runs_of_exactly_this_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KCL_RELAY_STATE_DIR", str(tmp_path))
    others = [make_state_dir(name) for name in ("orders-eu", "orders-eu", "orders.v2", "ordersx")]
    runs = []
    for n in range(KEEP_STATE_DIRS + 3):
        run = make_state_dir("orders")
        os.utime(run, (1_000_000 + n, 1_000_000 + n))  # distinct ages, oldest first
        runs.append(run)
    assert [run.exists() for run in runs] == [False] * 3 + [True] * KEEP_STATE_DIRS, "the newest runs stay"
    assert all(other.exists() for other in others), "an application whose name starts alike keeps its runs"
    (tmp_path / "kcl-relay-orders" / "worker-slot-0.lock").touch()
    make_state_dir("orders")
    assert (tmp_path / "kcl-relay-orders" / "worker-slot-0.lock").exists(), "slot locks are not runs"


@pytest.mark.usefixtures("no_state_env")
def test_another_users_application_folder_is_not_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a shared temp dir, a folder another user made (not writable here) gives way to one of this user's."""
    monkeypatch.setenv("KCL_RELAY_STATE_DIR", str(tmp_path))
    theirs = tmp_path / "kcl-relay-orders"
    theirs.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != theirs and real_access(path, mode))
    made = make_state_dir("orders")
    assert made.parent == tmp_path / f"kcl-relay-orders-uid{os.getuid()}"


def test_a_rate_needs_enough_records_and_seconds() -> None:
    from kcl_relay.rates import MIN_RATE_RECORDS, MIN_RATE_SECONDS, rate

    assert rate(MIN_RATE_RECORDS - 1, 100.0) is None
    assert rate(10**6, MIN_RATE_SECONDS / 2) is None
    assert rate(3 * MIN_RATE_RECORDS, 2 * MIN_RATE_SECONDS) == 1.5 * MIN_RATE_RECORDS / MIN_RATE_SECONDS
