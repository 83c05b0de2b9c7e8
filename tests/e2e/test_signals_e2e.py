"""Ctrl-C twice, through the real KCL: the first stops gracefully, the second kills the JVM's session at once.

The second Ctrl-C used to call Popen.wait() inside the signal handler, which could hang kcl-relay against the main
loop's Popen.poll(); now the handler only sends SIGKILL and the main loop reaps.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from kcl_relay.kcl.daemon import LAUNCHER_CLASS
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream
from tests.support.e2e import app_name, source_url, wait_for
from tests.support.faults import Worker

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
