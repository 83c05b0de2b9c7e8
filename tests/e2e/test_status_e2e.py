"""`kcl-relay status` tells a live lease owner from a dead one, with the real KCL on the emulators: a worker running
(its leases held, owner alive), stopped gracefully (the only worker keeps its leases for a restart, so the lease table
still names it: status calls it gone, its shards waiting), then started again and SIGKILLed with its JVM (the same,
and its worker metrics entry ages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import ENV, app_name, new_stream, source_url, wait_for
from tests.support.faults import Worker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def workers() -> Iterator[None]:
    yield
    Worker.crash_all()  # a test that failed half way leaves no worker behind


def status(url: str, target: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "kcl_relay", "status", url, "--target", target, "--table", "items", "--json"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def text_status(url: str, target: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kcl_relay", "status", url, "--target", target, "--table", "items"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def owners(report: dict[str, Any]) -> list[tuple[str | None, bool | None, bool]]:
    return [(s["owner"], s["owner_alive"], s["waiting_for_owner"]) for s in report["shards"]]


def test_status_tells_a_live_owner_from_a_stopped_and_a_killed_one(
    aws: LocalAws, tmp_path: Path, workers: None
) -> None:
    stream = new_stream(aws, shards=2)
    url = source_url(aws.endpoint_url, stream, app=app_name())
    target = f"sqlite:///{tmp_path / 'target.db'}"

    def held_by_live(worker: Worker) -> dict[str, Any] | None:
        report = status(url, target)
        return report if owners(report) == [(worker.worker_id, True, False)] * 2 else None

    first = Worker("a", url, target, "items", tmp_path / "a.log")
    wait_for(lambda: first.state_dir, 120, "the worker's state dir")
    running = wait_for(lambda: held_by_live(first), 120, "both leases held by the running worker, alive")
    assert running["shards"][0]["owner_last_report_seconds"] is not None  # judged by its worker metrics

    assert first.terminate() == 0
    stopped = status(url, target)  # at once: its metrics entry is still fresh, its counters stand still
    assert owners(stopped) == [(first.worker_id, False, True)] * 2, stopped
    assert "0 workers holding leases; 2 waiting for a new owner" in text_status(url, target)

    second = Worker("b", url, target, "items", tmp_path / "b.log")
    wait_for(lambda: second.state_dir, 120, "the second worker's state dir")
    wait_for(lambda: held_by_live(second), 120, "both leases held by the second worker, alive")
    second.crash()  # SIGKILL, the JVM's session too: nothing hands the leases back

    def gone() -> dict[str, Any] | None:
        report = status(url, target)
        return report if owners(report) == [(second.worker_id, False, True)] * 2 else None

    # gone once its counters stood still for the failover time (2 s), or its metrics entry is two reports old
    wait_for(gone, 60, "status to call the killed owner gone and its shards waiting")
