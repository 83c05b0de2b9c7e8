"""Delivery guarantees through the real KCL: a failed database never costs a record; resharding; run modes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kcl_relay.kcl.properties import read_properties, render
from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import (
    ENV,
    app_name,
    cdc_record,
    ids_in,
    new_stream,
    put_records,
    run_relay,
    source_url,
    state_dir,
)

pytestmark = pytest.mark.timeout(600)
T0 = 1_795_000_000_000_000
REPO = Path(__file__).resolve().parents[2]


def checkpoints(aws: LocalAws, app: str) -> dict[str, str]:
    leases = aws.client("dynamodb").scan(TableName=app)["Items"]
    return {lease["leaseKey"]["S"]: lease.get("checkpoint", {}).get("S", "") for lease in leases}


def test_a_failing_database_stops_the_worker_without_checkpoint_and_loses_nothing(
    aws: LocalAws, tmp_path: Path
) -> None:
    stream = new_stream(aws)
    put_records(aws.client("kinesis"), stream, [cdc_record("INSERT", f"k{i}", T0 + i) for i in range(8)])
    database = tmp_path / "target.db"
    with sqlite3.connect(database) as connection:  # a table of that name, but not ours: every write fails
        connection.execute("CREATE TABLE t (unrelated INTEGER)")
    target = f"sqlite:///{database}"
    app = app_name()

    failed = run_relay(source_url(aws.endpoint_url, stream, once="true", app=app), target, "t")
    assert failed.returncode == 1, failed.stderr[-2000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("kcl-relay: writing to the database failed on shardId-000000000000: "), last
    assert "OperationalError" in last and "stopped without checkpoint there" in last, "the cause, on the last line"
    assert "exiting without checkpoint" in (state_dir(failed.stderr) / "processor.log").read_text()
    assert checkpoints(aws, app) == {"shardId-000000000000": "TRIM_HORIZON"}

    with sqlite3.connect(database) as connection:  # the operator repairs the target; the worker is restarted
        connection.execute("DROP TABLE t")
    repaired = run_relay(source_url(aws.endpoint_url, stream, once="true", app=app), target, "t")
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert ids_in(target, "t") == {f"k{i}" for i in range(8)}
    assert checkpoints(aws, app)["shardId-000000000000"].isdigit()


def test_run_with_the_local_properties_template(aws: LocalAws, tmp_path: Path, sqlite_url: str) -> None:
    """`kcl-relay run --properties` with properties/local.properties, LocalStack style: region eu-central-1."""
    stream = new_stream(aws, region="eu-central-1")
    kinesis = aws.client("kinesis", region="eu-central-1")
    put_records(kinesis, stream, [cdc_record("INSERT", f"k{i}", T0 + i) for i in range(5)])
    props = read_properties(REPO / "properties" / "local.properties")
    app = app_name()
    props |= {
        "streamName": stream,
        "applicationName": app,
        "regionName": "eu-central-1",
        "kinesisEndpoint": aws.endpoint_url,
        "dynamoDBEndpoint": aws.endpoint_url,
        "failoverTimeMillis": "2000",
        "shardSyncIntervalMillis": "1000",
        "kclrelay.once": "true",
    }
    path = tmp_path / "worker.properties"
    path.write_text(render(props))
    done = subprocess.run(
        [sys.executable, "-m", "kcl_relay", "run", "--properties", str(path), "--target", sqlite_url],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ids_in(sqlite_url, props["kclrelay.table"]) == {f"k{i}" for i in range(5)}
    written = read_properties(state_dir(done.stderr) / "kcl.properties")
    assert written["applicationName"] == app and written["regionName"] == "eu-central-1"
    assert not any(key.startswith("kclrelay.") for key in written)  # ours stay ours
    assert written["executableName"].endswith("-m kcl_relay.kcl.processor")


def test_credentials_in_the_url_localstack_style(aws: LocalAws, sqlite_url: str) -> None:
    """kinesis+dynamodb+cdc://LSIA...:SECRET@localhost:PORT/STREAM?region=eu-central-1, no AWS_* in the env."""
    stream = new_stream(aws, region="eu-central-1")
    put_records(aws.client("kinesis", region="eu-central-1"), stream, [cdc_record("INSERT", "k", T0)])
    secret = "dummy-S3cr3t-e2e"
    url = source_url(aws.endpoint_url, stream, once="true", region="eu-central-1").replace(
        "cdc://", f"cdc://LSIAQAAAAAAVNCBMPNSG:{secret}@"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-m", "kcl_relay", "load", "table", url, "--target", sqlite_url, "--table", "t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ids_in(sqlite_url, "t") == {"k"}
    assert secret not in done.stderr
    files = [path for path in state_dir(done.stderr).rglob("*") if path.is_file()]
    assert files and all(secret not in path.read_text(errors="replace") for path in files)
