"""Status files during a long run: those of exited processors fold into totals; readers skip unchanged files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import kcl_relay.kcl.status as status_module
from kcl_relay.kcl.metrics import registry_for
from kcl_relay.kcl.status import (
    ENDED_SHARDS,
    ShardStatus,
    StatusReader,
    latest_by_shard,
    read_statuses,
    shard_dir,
    write_status,
)

COUNTERS = ("applied", "records", "dead_letters", "retries", "apply_count")


def put(state_dir: Path, status: ShardStatus, pid: int, updated_at: float) -> Path:
    """A status file as processor `pid` writes it, dated a while ago (older than a racy mtime)."""
    folder = shard_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{status.shard_id}.{pid}.json"
    path.write_text(json.dumps({**asdict(status), "updated_at": updated_at}))
    past = time.time() - 10
    os.utime(path, (past, past))
    return path


def sums(statuses: dict[str, ShardStatus]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: sum(getattr(s, name) for s in statuses.values()) for name in COUNTERS}
    totals["buckets"] = [sum(column) for column in zip(*(s.apply_buckets for s in statuses.values()), strict=True)]
    totals["fallbacks"] = sum(sum(s.fastpath_fallbacks.values()) for s in statuses.values())
    return totals


def state(statuses: dict[str, ShardStatus]) -> dict[str, tuple[Any, ...]]:
    return {
        shard: (s.caught_up, s.ended, s.lease_lost, s.stopped, s.failed, s.millis_behind, s.updated_at)
        for shard, s in latest_by_shard(statuses).items()
    }


def scrape(state_dir: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry_for(state_dir, "app", "stream")).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith(("_created", "_age_seconds"))
    }


def busy(shard: str, n: int, **flags: Any) -> ShardStatus:
    status = ShardStatus(shard, applied=n, records=2 * n, dead_letters=n % 3, retries=n % 2, **flags)
    status.observe_apply(0.01 * n)
    status.fastpath_fallbacks = {"dumps": n % 2}
    return status


def files(state_dir: Path) -> set[str]:
    return {path.name for path in shard_dir(state_dir).glob("*.json")}


def processor_files(state_dir: Path) -> set[str]:
    return {name for name in files(state_dir) if not name.endswith(".retired.json")}


def test_exited_processors_fold_into_totals_without_changing_what_readers_see(tmp_path: Path) -> None:
    put(tmp_path, busy("A", 40, lease_lost=True, millis_behind=900), pid=100, updated_at=1000.0)  # exited
    put(tmp_path, busy("A", 5, millis_behind=15), pid=200, updated_at=2000.0)  # holds A now
    put(tmp_path, busy("B", 7, ended=True, caught_up=True), pid=300, updated_at=1500.0)  # exited
    put(tmp_path, busy("C", 3, caught_up=True), pid=400, updated_at=1800.0)
    put(tmp_path, busy("D", 2, failed=True), pid=500, updated_at=1900.0)  # failed: stays for the supervisor
    put(tmp_path, busy("E", 9, stopped=True), pid=600, updated_at=1950.0)  # a lease handed off, then exited
    before, metrics_before = read_statuses(tmp_path), scrape(tmp_path)

    compacted = StatusReader(tmp_path, compact=True, alive={200, 400}.__contains__).read()

    retired = {"A.retired.json", "B.retired.json", "E.retired.json"}
    assert files(tmp_path) == {"A.200.json", "C.400.json", "D.500.json", *retired}
    assert sums(compacted) == sums(before) and state(compacted) == state(before)
    elsewhere = read_statuses(tmp_path)  # another process, the files alone
    assert sums(elsewhere) == sums(before) and state(elsewhere) == state(before)
    assert scrape(tmp_path) == metrics_before
    raw = [json.loads(path.read_text()) for path in shard_dir(tmp_path).glob("*.json")]  # as scripts read them
    assert sum(fields["applied"] for fields in raw) == sums(before)["applied"]
    assert {fields["shard_id"] for fields in raw} == {"A", "B", "C", "D", "E"}
    assert len(compacted) == 6, "one entry per live file and one per shard with exited processors"


def test_counters_never_drop_while_processors_come_and_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases move, shards end and split: files stay as many as the live processors, entries as the shards."""
    monkeypatch.setattr(status_module, "MAX_ENDED_SHARDS", 3)
    folded: dict[str, str] = {}  # the content of every retired entry, as last seen
    alive: set[int] = set()
    reader = StatusReader(tmp_path, compact=True, alive=alive.__contains__)
    expected = {name: 0 for name in COUNTERS}
    last_scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    pid = 1000
    for step in range(40):
        shard = f"shardId-{step // 4:012d}"  # four processors per shard, one after the other
        pid += 1
        ends = step % 4 == 3
        status = busy(shard, step, ended=ends, lease_lost=not ends, caught_up=ends)
        put(tmp_path, status, pid=pid, updated_at=1000.0 + step)
        alive.add(pid)
        for name in COUNTERS:
            expected[name] += getattr(status, name)
        seen = reader.read()
        assert {name: sums(seen)[name] for name in COUNTERS} == expected
        alive.discard(pid)  # it exits: the next read folds it in
        now = scrape(tmp_path)
        for key in ("kcl_relay_records_read_total", "kcl_relay_records_applied_total", "kcl_relay_dead_letters_total"):
            total = sum(value for (name, _), value in now.items() if name == key)
            assert total >= sum(value for (name, _), value in last_scrape.items() if name == key)
        last_scrape = now
        assert len(processor_files(tmp_path)) <= 1
        for path in shard_dir(tmp_path).glob("*.retired.json"):
            folded[path.name] = path.read_text()
        assert len(files(tmp_path)) <= 3 + 1 + 1 + 1, "a processor, the ended shards kept, the fold, the open one"
    final = reader.read()
    assert {name: sums(final)[name] for name in COUNTERS} == expected
    assert processor_files(tmp_path) == set()
    shards = {status.shard_id for status in final.values()}
    assert ENDED_SHARDS in shards and len(shards) == 3 + 1, "the oldest ended shards fold into one entry"
    assert sums(read_statuses(tmp_path)) == sums(final)
    # An entry folded into ENDED_SHARDS but not removed yet (a reader between the write and the removal): once.
    removed = {name: content for name, content in folded.items() if not (shard_dir(tmp_path) / name).exists()}
    assert len(removed) == 10 - 3
    for name, content in removed.items():
        (shard_dir(tmp_path) / name).write_text(content)
    assert sums(read_statuses(tmp_path)) == sums(final)


def test_a_file_counted_in_the_totals_but_not_yet_removed_counts_once(tmp_path: Path) -> None:
    """Between the retired file's write and the removal of the files it holds, a reader sees both."""
    path = put(tmp_path, busy("A", 4, lease_lost=True), pid=100, updated_at=10.0)
    content = path.read_text()
    before = sums(read_statuses(tmp_path))
    StatusReader(tmp_path, compact=True, alive=lambda pid: False).read()
    assert not path.exists()
    path.write_text(content)  # as if not removed yet
    assert sums(read_statuses(tmp_path)) == before
    put(tmp_path, busy("A", 1), pid=100, updated_at=20.0)  # a new processor that got the same pid: counts
    assert sums(read_statuses(tmp_path))["applied"] == 5


def test_unchanged_files_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []

    def loads(text: str) -> Any:
        parsed.append(text)
        return json.loads(text)

    monkeypatch.setattr(status_module, "json", SimpleNamespace(loads=loads, dumps=json.dumps))
    put(tmp_path, busy("A", 1), pid=1, updated_at=1.0)
    put(tmp_path, busy("B", 2), pid=2, updated_at=1.0)
    reader = StatusReader(tmp_path)
    assert sums(reader.read())["applied"] == 3 and len(parsed) == 2
    assert sums(reader.read())["applied"] == 3 and len(parsed) == 2, "nothing changed: nothing parsed"
    put(tmp_path, busy("B", 5), pid=2, updated_at=2.0)
    assert sums(reader.read())["applied"] == 6 and len(parsed) == 3
    (shard_dir(tmp_path) / "A.1.json").unlink()
    assert sums(reader.read())["applied"] == 5 and len(parsed) == 3


def test_a_file_written_just_now_is_read_again(tmp_path: Path) -> None:
    """Two writes within one mtime tick may leave size and mtime alike: a fresh file is never trusted to the cache."""
    reader = StatusReader(tmp_path)
    write_status(tmp_path, ShardStatus("A", applied=1))
    assert sums(reader.read())["applied"] == 1
    write_status(tmp_path, ShardStatus("A", applied=2))  # the same size, maybe the same mtime
    assert sums(reader.read())["applied"] == 2


def test_a_real_processor_that_exited_is_folded_and_a_live_one_is_not(tmp_path: Path) -> None:
    write_status(tmp_path, ShardStatus("A", applied=2))  # this process: alive
    code = "import sys; from pathlib import Path; from kcl_relay.kcl.status import ShardStatus, write_status; "
    code += "write_status(Path(sys.argv[1]), ShardStatus('B', applied=3, lease_lost=True))"
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert child.returncode == 0
    statuses = StatusReader(tmp_path, compact=True).read()
    assert files(tmp_path) == {f"A.{os.getpid()}.json", "B.retired.json"}
    assert sums(statuses)["applied"] == 5
    assert latest_by_shard(statuses)["B"].lease_lost


def test_the_supervisor_folds_the_files_of_exited_processors_as_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    import kcl_relay.kcl.supervisor as supervisor
    from kcl_relay.kcl.config import ProcessorConfig
    from tests.unit.test_companion import FakeDaemon

    monkeypatch.setattr(supervisor, "Daemon", FakeDaemon)
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 0.02)
    plan = supervisor.WorkerPlan(
        java="java",
        jars=tmp_path,
        properties={"applicationName": "app", "streamName": "s"},
        processor=ProcessorConfig(target_url="sqlite:///x.db", table="t", state_dir=str(tmp_path)),
        aws_env={},
        once=True,
        open_shards=lambda: {"A"},
    )
    folded: list[bool] = []

    def scenario() -> None:
        code = "import sys; from pathlib import Path; from kcl_relay.kcl.status import ShardStatus, write_status; "
        code += "write_status(Path(sys.argv[1]), ShardStatus('B', applied=7, records=9, lease_lost=True))"
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
        deadline = time.monotonic() + 30
        while files(tmp_path) != {"B.retired.json"} and time.monotonic() < deadline:
            time.sleep(0.02)
        folded.append(files(tmp_path) == {"B.retired.json"})
        write_status(tmp_path, ShardStatus("A", applied=1, records=1, caught_up=True))  # once=true: stop

    steps = threading.Thread(target=scenario, daemon=True)
    steps.start()
    assert supervisor.run_worker(plan) == 0
    steps.join(timeout=60)
    assert folded == [True], "the exited processor's file was folded into the totals during the run"
    assert "done: 10 records read, 8 applied after merging per key" in capsys.readouterr().err
