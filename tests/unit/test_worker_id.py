"""The stable default worker id: host name and the lowest slot no live worker of the application holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from kcl_relay.kcl import worker_id
from kcl_relay.kcl.worker_id import stable_worker_id, take_slot

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kcl_relay.kcl.worker_id import stable_worker_id
    print(stable_worker_id(Path(sys.argv[1]), "host"), flush=True)
    time.sleep(60)
    """
)


def hold_slot(folder: Path) -> tuple[subprocess.Popen[str], str]:
    """Another worker process on this host, and the id it took (it holds it until killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def test_two_workers_on_one_host_differ_and_a_restart_gets_its_id_back(tmp_path: Path) -> None:
    (first, first_id), (second, second_id) = hold_slot(tmp_path), hold_slot(tmp_path)
    try:
        assert (first_id, second_id) == ("host-0", "host-1")
        first.kill()  # however a worker ends, the kernel drops its lock
        first.wait()
        restarted, restarted_id = hold_slot(tmp_path)
        try:
            assert restarted_id == "host-0", "the lowest free slot: the one the stopped worker had"
        finally:
            restarted.kill()
            restarted.wait()
    finally:
        second.kill()
        second.wait()


def test_slots_within_one_process_are_distinct_and_held(tmp_path: Path) -> None:
    held = len(worker_id._held)
    try:
        assert [take_slot(tmp_path) for _ in range(3)] == [0, 1, 2]
        assert stable_worker_id(tmp_path, "h") == "h-3"
        assert sorted(p.name for p in tmp_path.iterdir())[:2] == ["worker-slot-0.lock", "worker-slot-1.lock"]
    finally:
        for handle in worker_id._held[held:]:
            handle.close()
        del worker_id._held[held:]


def test_no_slot_without_a_usable_folder(tmp_path: Path) -> None:
    assert take_slot(tmp_path / "missing") is None
    assert stable_worker_id(tmp_path / "missing") is None
