"""The Prometheus collector: metrics summed from the processors' status files at scrape time."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.daemon import SetupError
from kcl_relay.kcl.metrics import MetricsServer, registry_for
from kcl_relay.kcl.status import APPLY_SECONDS_BUCKETS, ShardStatus, shard_dir, write_status
from kcl_relay.kcl.supervisor import WorkerPlan, start_metrics

APP, STREAM = "kcl-relay-app", "cdc"


def samples(state_dir: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels (without the application and stream labels)."""
    text = generate_latest(registry_for(state_dir, APP, STREAM)).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.pop("application") == APP and sample.labels.pop("stream") == STREAM
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def put(state_dir: Path, status: ShardStatus, pid: int, updated_at: float) -> None:
    """A status file as processor `pid` writes it (write_status names files after the writing process)."""
    folder = shard_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fields = {**status.__dict__, "updated_at": updated_at}
    (folder / f"{status.shard_id}.{pid}.json").write_text(json.dumps(fields))


def test_no_status_files_yet(tmp_path: Path) -> None:
    found = samples(tmp_path)
    assert found[("kcl_relay_leases_held", ())] == 0
    assert found[("kcl_relay_batch_apply_seconds_count", ())] == 0
    assert not any(name == "kcl_relay_records_applied_total" for name, _ in found)


def test_counters_sum_every_processor_of_a_shard_and_gauges_follow_the_current_one(tmp_path: Path) -> None:
    # shard 0: a first processor lost its lease, a second one (a later process) holds it now
    first = ShardStatus("shardId-0", applied=40, records=50, dead_letters=2, misfits=4, retries=3, millis_behind=9000)
    first.lease_lost = True
    put(tmp_path, first, pid=100, updated_at=1000.0)
    second = ShardStatus("shardId-0", applied=5, records=6, retries=1, millis_behind=1500, last_applied_at=1234.5)
    second.observe_apply(0.02)
    second.observe_apply(0.3)
    put(tmp_path, second, pid=200, updated_at=2000.0)
    # shard 1: caught up; shard 2: finished (shard end)
    put(tmp_path, ShardStatus("shardId-1", applied=7, records=7, millis_behind=0, caught_up=True), 300, 1500.0)
    put(tmp_path, ShardStatus("shardId-2", applied=1, records=1, millis_behind=0, ended=True), 400, 1500.0)

    found = samples(tmp_path)
    shard0 = (("shard", "shardId-0"),)
    assert found[("kcl_relay_records_read_total", shard0)] == 56
    assert found[("kcl_relay_records_applied_total", shard0)] == 45
    assert found[("kcl_relay_dead_letters_total", shard0)] == 2
    assert found[("kcl_relay_mapping_misfits_total", shard0)] == 4
    assert found[("kcl_relay_database_retries_total", shard0)] == 4
    assert found[("kcl_relay_records_applied_total", (("shard", "shardId-2"),))] == 1
    # lag of the shards held now: the current processor's, not the one that lost the lease; none for a finished shard
    assert found[("kcl_relay_millis_behind_latest", shard0)] == 1500
    assert found[("kcl_relay_millis_behind_latest", (("shard", "shardId-1"),))] == 0
    assert ("kcl_relay_millis_behind_latest", (("shard", "shardId-2"),)) not in found
    assert found[("kcl_relay_shard_caught_up", (("shard", "shardId-1"),))] == 1
    assert found[("kcl_relay_shard_caught_up", shard0)] == 0
    assert found[("kcl_relay_leases_held", ())] == 2
    assert found[("kcl_relay_shard_status_age_seconds", shard0)] == pytest.approx(time.time() - 2000.0, abs=5)
    assert ("kcl_relay_shard_status_age_seconds", (("shard", "shardId-2"),)) not in found  # finished: not held
    assert found[("kcl_relay_processors_failed", ())] == 0
    assert found[("kcl_relay_last_applied_timestamp_seconds", ())] == 1234.5
    # the histogram: cumulative buckets
    assert found[("kcl_relay_batch_apply_seconds_count", ())] == 2
    assert found[("kcl_relay_batch_apply_seconds_sum", ())] == pytest.approx(0.32)
    assert found[("kcl_relay_batch_apply_seconds_bucket", (("le", "0.01"),))] == 0
    assert found[("kcl_relay_batch_apply_seconds_bucket", (("le", "0.025"),))] == 1
    assert found[("kcl_relay_batch_apply_seconds_bucket", (("le", "0.25"),))] == 1
    assert found[("kcl_relay_batch_apply_seconds_bucket", (("le", "0.5"),))] == 2
    assert found[("kcl_relay_batch_apply_seconds_bucket", (("le", "+Inf"),))] == 2


def test_observe_apply_buckets_include_their_upper_bound() -> None:
    status = ShardStatus("s")
    for seconds in (0.0, APPLY_SECONDS_BUCKETS[0], 0.0051, 1000.0):
        status.observe_apply(seconds)
    assert status.apply_buckets[0] == 2  # 0 and exactly the first bound: le="0.005"
    assert status.apply_buckets[1] == 1
    assert status.apply_buckets[-1] == 1  # beyond the last bound: +Inf only
    assert status.apply_count == 4 and sum(status.apply_buckets) == 4


def test_a_failed_processor_holds_no_lease(tmp_path: Path) -> None:
    put(tmp_path, ShardStatus("shardId-0", failed=True, retries=12), pid=1, updated_at=1.0)
    found = samples(tmp_path)
    assert found[("kcl_relay_processors_failed", ())] == 1
    assert found[("kcl_relay_leases_held", ())] == 0
    assert found[("kcl_relay_database_retries_total", (("shard", "shardId-0"),))] == 12


def test_fast_path_fallbacks_are_summed_per_path(tmp_path: Path) -> None:
    assert samples(tmp_path)[("kcl_relay_fastpath_fallbacks_total", (("path", "decode_record"),))] == 0
    put(tmp_path, ShardStatus("shardId-0", fastpath_fallbacks={"decode_record": 3}), pid=1, updated_at=1.0)
    put(tmp_path, ShardStatus("shardId-1", fastpath_fallbacks={"decode_record": 2, "dumps": 1}), pid=2, updated_at=1.0)
    found = samples(tmp_path)
    name = "kcl_relay_fastpath_fallbacks_total"
    fallbacks = {labels: value for (sample, labels), value in found.items() if sample == name}
    assert fallbacks == {
        (("path", "decode_record"),): 5,
        (("path", "dumps"),): 1,
        (("path", "from_item"),): 0,
        (("path", "order_token"),): 0,
        (("path", "split"),): 0,
    }


def test_status_files_of_other_buckets_are_left_out_of_the_histogram(tmp_path: Path) -> None:
    status = ShardStatus("shardId-0", applied=3)
    status.apply_buckets = [1, 2]  # another version's buckets
    status.apply_count = 3
    put(tmp_path, status, pid=1, updated_at=1.0)
    found = samples(tmp_path)
    assert found[("kcl_relay_batch_apply_seconds_count", ())] == 0
    assert found[("kcl_relay_records_applied_total", (("shard", "shardId-0"),))] == 3


def test_server_serves_what_the_files_say_at_each_scrape(tmp_path: Path) -> None:
    server = MetricsServer("127.0.0.1", 0, registry_for(tmp_path, APP, STREAM))
    try:
        port = server.port
        write_status(tmp_path, ShardStatus("shardId-0", applied=3, records=3))
        first = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        write_status(tmp_path, ShardStatus("shardId-0", applied=8, records=8))  # the same process: replaced
        second = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    line = 'kcl_relay_records_applied_total{application="kcl-relay-app",shard="shardId-0",stream="cdc"}'
    assert f"{line} 3.0" in first
    assert f"{line} 8.0" in second


def plan(port: int | None, host: str = "127.0.0.1") -> WorkerPlan:
    processor = ProcessorConfig(target_url="sqlite:///x.db", table="t", state_dir="unused")
    properties = {"applicationName": APP, "streamName": STREAM}
    return WorkerPlan("java", Path("jars"), properties, processor, {}, metrics_host=host, metrics_port=port)


def test_the_supervisor_serves_metrics_only_when_asked(tmp_path: Path) -> None:
    assert start_metrics(plan(None), tmp_path) is None


def test_a_taken_metrics_port_is_a_setup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SetupError, match=rf"^cannot serve metrics on 127\.0\.0\.1:{port}: "):
            start_metrics(plan(port), tmp_path)


def test_the_supervisor_serves_its_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_status(tmp_path, ShardStatus("shardId-0", applied=2, records=2))
    server = start_metrics(plan(0), tmp_path)
    assert server is not None
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    assert 'kcl_relay_records_applied_total{application="kcl-relay-app",shard="shardId-0",stream="cdc"} 2.0' in body
    assert f"Prometheus metrics on http://127.0.0.1:{server.port}/metrics" in capsys.readouterr().err
