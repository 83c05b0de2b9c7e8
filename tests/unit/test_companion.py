"""The full load beside the KCL worker, without Java: run_worker with a companion, once=true convergence, stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import kcl_relay.kcl.supervisor as supervisor
from kcl_relay.fullload import SnapshotCompanion
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.status import ShardStatus, write_status
from kcl_relay.kcl.supervisor import WorkerPlan, caught_up, run_worker

A = "shardId-000000000000"


def test_caught_up_since_counts_only_later_reads() -> None:
    early = ShardStatus(A, caught_up=True, updated_at=100.0)
    assert caught_up({A: early}, {A})
    assert caught_up({A: early}, {A}, since=99.0)
    assert not caught_up({A: early}, {A}, since=101.0)
    assert caught_up({A: ShardStatus(A, ended=True, updated_at=1.0)}, {A}, since=101.0), "an ended shard is done"


class FakeDaemon:
    """Stands in for the MultiLangDaemon: runs until asked to stop."""

    def __init__(self, *args: Any) -> None:
        self.stopping = False
        self.log_path = Path("/dev/null")

    def start(self) -> None:
        pass

    def poll(self) -> int | None:
        return 0 if self.stopping else None

    def request_stop(self) -> None:
        self.stopping = True

    def kill(self) -> None:
        self.stopping = True

    def tail(self) -> str:
        return ""

    def told(self) -> list[str]:
        return []


class FakeCompanion:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.events: list[str] = []
        self.finished: float | None = None
        self.error: str | None = None
        self.polls = 0  # calls of finished_at: one per turn of the worker's loop

    def start(self) -> None:
        self.events.append("start")

    def poll(self) -> str | None:
        return self.error

    def finished_at(self) -> float | None:
        self.polls += 1
        return self.finished

    def wait_turns(self, turns: int, timeout: float = 30) -> None:
        """Until the worker's loop has gone round `turns` more times (it has seen what was written before)."""
        until, deadline = self.polls + turns, time.monotonic() + timeout
        while self.polls < until:
            assert time.monotonic() < deadline, f"the worker's loop did not turn {turns} times in {timeout:.0f} s"
            time.sleep(0.005)

    def stop(self) -> None:
        self.events.append("stop")


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkerPlan:
    monkeypatch.setattr(supervisor, "Daemon", FakeDaemon)
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 0.02)
    return WorkerPlan(
        java="java",
        jars=tmp_path,
        properties={"applicationName": "app", "streamName": "s"},
        processor=ProcessorConfig(target_url="sqlite:///x.db", table="t", state_dir=str(tmp_path)),
        aws_env={},
        once=True,
        open_shards=lambda: {A},
        companion=FakeCompanion(tmp_path),
    )


def in_background(steps: Any) -> threading.Thread:
    """run_worker installs signal handlers, so it runs in the main thread; the scenario runs beside it."""
    thread = threading.Thread(target=steps, daemon=True)
    thread.start()
    return thread


def test_once_waits_for_the_companion_and_a_read_after_it(plan: WorkerPlan, tmp_path: Path) -> None:
    companion = plan.companion
    assert isinstance(companion, FakeCompanion)
    write_status(tmp_path, ShardStatus(A, caught_up=True))  # caught up, but the scan still runs
    last_read: list[float] = []
    stopped_early: list[bool] = []
    failures: list[BaseException] = []

    def scenario() -> None:
        try:
            companion.wait_turns(2)  # running: the scan goes on, caught-up shards do not count yet
            write_status(tmp_path, ShardStatus(A, caught_up=True))  # a read before the scan's end does not count
            companion.finished = time.time()  # done (settle time included): after that read
            companion.wait_turns(3)
            stopped_early.append("stop" in companion.events)
        except BaseException as error:  # told by the main thread; the last status below still stops the worker
            failures.append(error)
        finally:
            companion.finished = companion.finished or time.time()
            last_read.append(time.monotonic())
            write_status(tmp_path, ShardStatus(A, caught_up=True))  # the tip read after the scan's end

    steps = in_background(scenario)
    assert run_worker(plan) == 0
    returned = time.monotonic()
    steps.join()
    assert not failures, failures
    assert stopped_early == [False], "once=true stopped on a read from before the scan's end"
    assert last_read and returned > last_read[0], "once=true stopped before a read after the scan's end"
    assert companion.events[0] == "start" and "stop" in companion.events


def test_a_failed_companion_stops_the_worker_with_exit_code_1(
    plan: WorkerPlan, capsys: pytest.CaptureFixture[str]
) -> None:
    companion = plan.companion
    assert isinstance(companion, FakeCompanion)
    companion.error = "the snapshot failed: boom"
    assert run_worker(plan) == 1
    assert "error: the snapshot failed: boom: stopping" in capsys.readouterr().err


class SlowSnapshot:
    """Stands in for fullload.Snapshot in SnapshotCompanion."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.complete = False
        self.info = type("Info", (), {"name": "orders"})()
        self.spec = type("Spec", (), {"segments": 2})()

    def run(self, stop: threading.Event) -> None:
        if self.fail:
            raise RuntimeError("the database is gone")
        stop.wait(10)
        self.complete = not stop.is_set()

    def summary(self) -> str:
        return "done"

    def progress(self) -> str:
        return "progress"


def test_snapshot_companion_reports_failure_and_stops() -> None:
    failing = SnapshotCompanion(SlowSnapshot(fail=True), settle=1.0)  # type: ignore[arg-type]
    failing.start()
    failing.stop()
    assert failing.poll() == "the snapshot failed: RuntimeError: the database is gone"
    assert failing.finished_at() is None

    stopped = SnapshotCompanion(SlowSnapshot(), settle=1.0)  # type: ignore[arg-type]
    stopped.start()
    stopped.stop()  # at once, not after the ten seconds
    assert stopped.poll() is None and stopped.finished_at() is None

    never_started = SnapshotCompanion(SlowSnapshot(), settle=1.0)  # type: ignore[arg-type]
    never_started.stop()
