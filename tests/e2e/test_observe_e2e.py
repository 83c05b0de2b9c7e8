"""End to end: a running relay (real KCL, moto) seen from outside: `kcl-relay status` and the Prometheus endpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import (
    ENV,
    app_name,
    cdc_record,
    new_stream,
    put_records,
    run_relay,
    source_url,
    start_relay,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

SHARDS, KEYS = 2, 40
TABLE = "observed"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics -> {sample name: {labels without application/stream: value}}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k not in ("application", "stream")}
            samples.setdefault(sample.name, {})[tuple(sorted(labels.items()))] = sample.value
    return samples


def status(url: str, target_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kcl_relay", "status", url, "--target", target_url, "--table", TABLE, *extra]
    return subprocess.run(command, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)


@dataclass
class Running:
    aws: LocalAws
    url: str
    target_url: str
    app: str
    port: int
    log: Path


@pytest.fixture(scope="module")
def running(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One relay of KEYS records on a 2-shard stream, with metrics-port, caught up and still running."""
    folder = tmp_path_factory.mktemp("observe")
    target_url = f"sqlite:///{folder / 'relay.db'}"
    stream = new_stream(aws, shards=SHARDS)
    records = [cdc_record("INSERT", f"k{i:03d}", 1_795_000_000_000_000 + i) for i in range(KEYS)]
    put_records(aws.client("kinesis"), stream, records)
    app, port = app_name(), free_port()
    url = source_url(aws.endpoint_url, stream, app=app, **{"metrics-port": str(port)})
    log = folder / "relay.log"
    worker = start_relay(url, target_url, TABLE, log)
    try:

        def all_applied() -> bool:
            try:
                applied = scrape(port).get("kcl_relay_records_applied_total", {})
            except OSError:  # not listening yet
                return False
            return sum(applied.values()) >= KEYS

        wait_for(all_applied, 180, f"{KEYS} records applied, by the metrics")
        yield Running(aws, url, target_url, app, port, log)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=90)
    assert code == 0, log.read_text()[-2000:]


def test_metrics_count_what_was_written(running: Running) -> None:
    metrics = scrape(running.port)
    applied = metrics["kcl_relay_records_applied_total"]
    assert sum(applied.values()) == KEYS  # every record a distinct key: one applied event each
    assert sum(metrics["kcl_relay_records_read_total"].values()) == KEYS
    assert {dict(labels)["shard"] for labels in applied} == {f"shardId-{i:012d}" for i in range(SHARDS)}
    assert sum(metrics["kcl_relay_dead_letters_total"].values()) == 0
    assert sum(metrics["kcl_relay_database_retries_total"].values()) == 0
    assert metrics["kcl_relay_leases_held"][()] == SHARDS
    assert len(metrics["kcl_relay_millis_behind_latest"]) == SHARDS
    assert metrics["kcl_relay_batch_apply_seconds_count"][()] >= SHARDS  # at least one batch per shard
    assert metrics["kcl_relay_batch_apply_seconds_sum"][()] > 0
    assert all(age < 30 for age in metrics["kcl_relay_shard_status_age_seconds"].values())  # reporting while idle
    assert "Prometheus metrics on http://127.0.0.1:" in running.log.read_text()


def test_status_shows_the_lease_table_owners_checkpoints_and_lag(running: Running) -> None:
    done = status(running.url, running.target_url, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["lease_table"] == running.app and report["application"] == running.app
    leases = running.aws.client("dynamodb").scan(TableName=running.app, ConsistentRead=True)["Items"]
    expected = {item["leaseKey"]["S"]: (item["leaseOwner"]["S"], item["checkpoint"]["S"]) for item in leases}
    got = {shard["shard_id"]: (shard["owner"], shard["checkpoint"]) for shard in report["shards"]}
    assert got == expected
    assert all(checkpoint.isdigit() for _, checkpoint in got.values())  # both shards had records, all checkpointed
    for shard in report["shards"]:
        assert (shard["closed"], shard["finished"]) == (False, False)
        assert (shard["millis_behind_latest"], shard["lag"], shard["caught_up"]) == (0, "caught up", True)
    assert report["caught_up"] is True

    text = status(running.url, running.target_url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"lease table {running.app} (application {running.app}), stream ")
    assert lines[1].endswith("every shard caught up")
    assert sum("caught up" in line for line in lines[3:]) == SHARDS


def test_status_of_settings_that_never_ran(aws: LocalAws, tmp_path: Path) -> None:
    stream = new_stream(aws, shards=1)
    never = f"never-{app_name()}"
    done = status(source_url(aws.endpoint_url, stream, app=never), f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        f"kcl-relay: no lease table {never} at {aws.endpoint_url}: the relay never ran with these settings "
        "(stream, target table and app= name the application)"
    )
    missing = status(source_url(aws.endpoint_url, "no-such-stream", app=never), f"sqlite:///{tmp_path / 'x.db'}")
    assert missing.returncode == 1  # the lease table is looked at first: it is what these settings are about


def test_kcl_cloudwatch_metrics_opt_in(aws: LocalAws, tmp_path: Path) -> None:
    """kcl-metrics=summary: the KCL publishes its own metrics to the endpoint's CloudWatch, under the application."""
    stream = new_stream(aws, shards=1)
    put_records(
        aws.client("kinesis"), stream, [cdc_record("INSERT", f"k{i}", 1_795_000_000_000_000 + i) for i in range(3)]
    )
    app = app_name()
    url = source_url(aws.endpoint_url, stream, app=app, once="true", **{"kcl-metrics": "summary"})
    done = run_relay(url, f"sqlite:///{tmp_path / 'cw.db'}", TABLE, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {metric["MetricName"] for metric in aws.client("cloudwatch").list_metrics(Namespace=app)["Metrics"]}
    assert {"RecordsProcessed", "MillisBehindLatest"} <= names, names
