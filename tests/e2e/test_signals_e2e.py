"""Signals through the real KCL (kcl-relay's launcher; the stock MultiLangDaemon once): Ctrl-C twice, the first stops
gracefully, the second kills the JVM's session at once; SIGTERM of a lone worker keeps its leases for its restart.

The second Ctrl-C used to call Popen.wait() inside the signal handler, which could hang kcl-relay against the main
loop's Popen.poll(); now the handler only sends SIGKILL and the main loop reaps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from kcl_relay.kcl.daemon import LAUNCHER_CLASS
from kcl_relay.kcl.launcher import DAEMON_ENV
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream
from kcl_relay.sink.target import parse_target
from tests.support.e2e import app_name, cdc_record, put_records, run_relay, source_url, state_dir, wait_for
from tests.support.faults import Worker
from tests.support.tables import read_items

pytestmark = pytest.mark.timeout(400)
STREAM = "signals-cdc"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_a_second_ctrl_c_kills_the_worker_during_its_graceful_stop(tmp_path: Path) -> None:
    with LocalAws() as aws:
        create_stream(aws.client("kinesis"), STREAM, shards=1)
        url = source_url(aws.endpoint_url, STREAM, app=app_name())
        worker = Worker("w", url, "sqlite:///" + str(tmp_path / "t.db"), "t", tmp_path / "w.log")
        jvm = processor = 0
        try:
            (status_file,) = wait_for(lambda: list(worker.statuses()), 120, "a processor")
            # Only now: before, the supervisor's child may be `java -version` (find_java), not the JVM.
            jvm = wait_for(worker.jvm_pid, 60, "the KCL's JVM")
            assert LAUNCHER_CLASS in Path(f"/proc/{jvm}/cmdline").read_text()
            processor = int(status_file.rsplit(".", 1)[1])  # SHARD.PID
            # A processor that does not answer shutdown_requested: the KCL's graceful stop waits for it (up to
            # shutdownGraceMillis), so the second Ctrl-C surely comes during that stop.
            os.kill(processor, signal.SIGSTOP)
            worker.process.send_signal(signal.SIGINT)
            assert worker.state_dir is not None
            kcl_log = worker.state_dir / "kcl.log"
            stopping = "kcl-relay launcher: graceful stop"
            wait_for(lambda: stopping in kcl_log.read_text(), 60, "the JVM's graceful stop", 0.1)
            assert running(jvm), "the JVM still shuts down"
            worker.process.send_signal(signal.SIGINT)
            assert worker.process.wait(timeout=60) == 1
            wait_for(lambda: not running(jvm) and not running(processor), 30, "the JVM's session to be gone")
        finally:
            if jvm:
                with contextlib.suppress(ProcessLookupError):  # a failed test leaves no JVM behind
                    os.killpg(jvm, signal.SIGKILL)
            Worker.crash_all()
    log = worker.log.read_text()
    assert "another signal during the stop: killed the KCL" in log
    assert log.strip().splitlines()[-1].startswith("kcl-relay: stopped by force: ")


def lease_owners(aws: LocalAws, app: str) -> dict[str, str | None]:
    items = aws.client("dynamodb").scan(TableName=app, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item.get("leaseOwner", {}).get("S") for item in items}


def test_sigterm_of_a_lone_worker_keeps_its_leases_and_its_restart_resumes(tmp_path: Path) -> None:
    """The launcher's graceful stop: processors checkpoint, a worker alone keeps its leases (its lasting default id
    finds them at once after a restart), the JVM exits without the KCL's failover-time wait."""
    target = "sqlite:///" + str(tmp_path / "t.db")
    with LocalAws() as aws:
        kinesis = aws.client("kinesis")
        create_stream(kinesis, STREAM, shards=1)
        app = app_name()
        url = source_url(aws.endpoint_url, STREAM, app=app, **{"failover-time": "10"})
        put_records(kinesis, STREAM, [cdc_record("INSERT", f"k{i}", 1_795_000_000_000_000 + i) for i in range(5)])
        first = Worker("w1", url, target, "t", tmp_path / "w1.log")
        wait_for(lambda: any(s.first_applied_at for s in first.statuses().values()), 120, "records applied")
        stopping = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        code = first.process.wait(timeout=60)
        stop_seconds = time.monotonic() - stopping
        owners = lease_owners(aws, app)
        put_records(kinesis, STREAM, [cdc_record("INSERT", f"n{i}", 1_796_000_000_000_000 + i) for i in range(5)])
        spawned = time.time()
        second = Worker("w2", url, target, "t", tmp_path / "w2.log")
        try:
            restarted = wait_for(
                lambda: next((s.first_applied_at for s in second.statuses().values() if s.first_applied_at), None),
                120,
                "records applied after the restart",
            )
            restart_seconds = restarted - spawned
        finally:
            second.terminate()
            Worker.crash_all()
    log = first.log.read_text()
    print(
        f"\n[signals] SIGTERM to exit {stop_seconds:.1f} s (failover-time 10 s); restart to first record "
        f"{restart_seconds:.1f} s"
    )
    assert code == 0, log
    assert f"kept the leases of worker {first.worker_id}" in log
    assert set(owners.values()) == {first.worker_id}
    assert second.worker_id == first.worker_id
    assert "shutdown requested, flushed and checkpointed" in (first.state_dir / "processor.log").read_text()


def test_the_stock_multilang_daemon_still_relays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KCL_RELAY_DAEMON=multilang: the stock MultiLangDaemon reads the same properties and relays as before."""
    monkeypatch.setenv(DAEMON_ENV, "multilang")
    target = "sqlite:///" + str(tmp_path / "t.db")
    with LocalAws() as aws:
        kinesis = aws.client("kinesis")
        create_stream(kinesis, STREAM, shards=1)
        put_records(kinesis, STREAM, [cdc_record("INSERT", f"k{i}", 1_795_000_000_000_000 + i) for i in range(5)])
        done = run_relay(source_url(aws.endpoint_url, STREAM, app=app_name(), once="true"), target, "t")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_items(parse_target(target, "t"), {"id": "S"})) == 5
    kcl_log = (state_dir(done.stderr) / "kcl.log").read_text()
    assert "will initiate shutdown" in kcl_log  # the MultiLangDaemon's own shutdown hook
    assert "kcl-relay launcher" not in kcl_log


def test_a_clean_run_logs_no_warning(tmp_path: Path) -> None:
    """once=true at the default log level (warn), through the graceful stop: the KCL's log and the processors' are
    empty (they held the KCL's worker-metrics and lease-assignment warnings at start, "lease lost" at each stop)."""
    target = "sqlite:///" + str(tmp_path / "t.db")
    with LocalAws() as aws:
        kinesis = aws.client("kinesis")
        create_stream(kinesis, STREAM, shards=2)
        put_records(kinesis, STREAM, [cdc_record("INSERT", f"k{i}", 1_795_000_000_000_000 + i) for i in range(10)])
        url = source_url(aws.endpoint_url, STREAM, app=app_name(), once="true", **{"log-level": "warn"})
        done = run_relay(url, target, "t")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = state_dir(done.stderr)
    kcl_log = (folder / "kcl.log").read_text() if (folder / "kcl.log").exists() else ""
    processor_log = (folder / "processor.log").read_text() if (folder / "processor.log").exists() else ""
    # Known, under load only (CI run 8, once in about 10 runs): the leader's first lease assignment can come before
    # this worker's first metrics report, and the KCL warns, then assigns at its next pass. Any other line fails.
    race = "Not able to assign all expiredOrUnAssignedLeases"
    unexpected = [line for line in kcl_log.splitlines() if line.strip() and race not in line]
    assert unexpected == [], kcl_log[:3000]
    assert processor_log == "", processor_log[:3000]
