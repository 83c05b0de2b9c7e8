"""A database outage mid-stream, through the real MultiLangDaemon: item writes go on in the DynamoDB emulator, the
target database is stopped and started again, the worker keeps retrying (retry-timeout), never checkpoints past
what was not applied, resumes by itself, and the target ends equal to a scan of the DynamoDB table.

The outage lasts KCL_RELAY_OUTAGE_SECONDS (default 12 s in CI; the long form, KCL_RELAY_FAULTS_LONG=1: 30 s).
Scenario d of the fault scenarios (docs/faults.md); KCL_RELAY_FAULTS_REPORT=FILE.json records its figures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kcl_relay.cdc.event import canonical_key
from kcl_relay.cdc.values import from_item
from kcl_relay.localaws.pump import PumpClients, StreamPump
from kcl_relay.localaws.server import LocalAws
from kcl_relay.localaws.workload import create_stream, create_table, run_workload, scan_items
from kcl_relay.sink.target import parse_target
from tests.support.cratedb import find_tarball, running_cratedb
from tests.support.e2e import app_name, source_url, start_relay, state_dir, wait_for
from tests.support.faults import LONG, report
from tests.support.postgres import PostgresUnavailable, running_postgres
from tests.support.tables import read_items, same_value

pytestmark = pytest.mark.timeout(900)

OUTAGE_SECONDS = float(os.environ.get("KCL_RELAY_OUTAGE_SECONDS", "30" if LONG else "12"))
TABLE, STREAM = "orders", "orders-cdc"
KEY_SCHEMA = (("tenant", "S"), ("id", "N"))


@dataclass
class StoppableDatabase:
    url: str
    stop: Callable[[], None]
    start: Callable[[], None]


@pytest.fixture(params=["cratedb", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[StoppableDatabase]:
    """A database of this test's own, since it is stopped and started again."""
    if request.param == "cratedb":
        if os.environ.get("CRATEDB_SQLALCHEMY_URL") and find_tarball() is None:
            pytest.skip("the outage needs a CrateDB this test can stop: no tarball (KCL_RELAY_CRATEDB_TARBALL)")
        with running_cratedb(find_tarball()) as crate:
            yield StoppableDatabase(crate.url(), crate.stop, lambda: crate.start() and None)
        return
    try:
        with running_postgres() as postgres:
            yield StoppableDatabase(postgres.create_database("outage"), postgres.stop, postgres.resume)
    except PostgresUnavailable as missing:
        pytest.skip(str(missing))


class Writers:
    """Item writes in the DynamoDB emulator and the pump that republishes them into Kinesis, in the background."""

    def __init__(self, aws: LocalAws) -> None:
        self.ddb = aws.client("dynamodb")
        self.pump = StreamPump(PumpClients.for_endpoint(aws.endpoint_url), TABLE, STREAM)
        self.stop_event = threading.Event()
        self.rounds = 0
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._pump)]

    def _write(self) -> None:
        while not self.stop_event.is_set():
            run_workload(self.ddb, TABLE, n_writes=30, n_updates=15, n_deletes=8, seed=self.rounds, n_keys=120)
            self.rounds += 1
            time.sleep(0.3)

    def _pump(self) -> None:
        self.pump.follow(self.stop_event, interval=0.2)

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.pump.pump_available()  # what was written last


def checkpoints(aws: LocalAws, app: str) -> dict[str, str]:
    leases = aws.client("dynamodb").scan(TableName=app, ConsistentRead=True)["Items"]
    return {lease["leaseKey"]["S"]: lease.get("checkpoint", {}).get("S", "") for lease in leases}


def oracle(aws: LocalAws) -> dict[str, dict]:
    items = {}
    for raw in scan_items(aws.client("dynamodb"), TABLE).values():
        item = from_item(raw)
        items[canonical_key({name: item[name] for name, _ in KEY_SCHEMA})] = item
    return items


def test_a_database_outage_mid_stream_is_ridden_out(database: StoppableDatabase, tmp_path: Path) -> None:
    table = "orders_outage"
    spec = parse_target(database.url, table)
    started = time.monotonic()
    with LocalAws() as aws:
        create_table(aws.client("dynamodb"), TABLE, KEY_SCHEMA)
        create_stream(aws.client("kinesis"), STREAM, shards=2)
        app = app_name()
        log = tmp_path / "relay.log"
        relay = start_relay(
            source_url(aws.endpoint_url, STREAM, app=app, **{"retry-timeout": "300"}), database.url, table, log
        )
        try:
            with Writers(aws):

                def rows() -> int:
                    with contextlib.suppress(Exception):  # the table appears with the first batch
                        return len(read_items(spec, dict(KEY_SCHEMA)))
                    return 0

                wait_for(rows, 240, "the first rows")
                database.stop()
                time.sleep(3)  # a flush that was under way when the database went is done (failed) by now
                before = checkpoints(aws, app)
                time.sleep(max(OUTAGE_SECONDS - 3, 1))
                during = checkpoints(aws, app)
                assert relay.poll() is None, "the worker gave up during a short outage:\n" + log.read_text()[-2000:]
                database.start()
                time.sleep(5)  # writes go on after the database is back
            assert during == before, "a checkpoint moved while nothing could be applied"
            expected = oracle(aws)

            def in_sync() -> bool:
                with contextlib.suppress(Exception):
                    return read_items(spec, dict(KEY_SCHEMA)).keys() == expected.keys()
                return False

            wait_for(in_sync, 300, "the target to catch up with the DynamoDB table")
            got = read_items(spec, dict(KEY_SCHEMA))
            assert [key for key, item in expected.items() if not same_value(item, got[key])] == []
        finally:
            relay.send_signal(signal.SIGTERM)
            code = relay.wait(timeout=120)
        assert code == 0, log.read_text()[-2000:]
        processor_log = (state_dir(log.read_text()) / "processor.log").read_text()
        assert "transient failure" in processor_log  # it retried, and never gave up
        assert "exiting without checkpoint" not in processor_log
        report(
            f"outage[{spec.dialect}]",
            {
                "outage_s": OUTAGE_SECONDS,
                "checkpoint_moved_during_outage": during != before,
                "items_at_end": len(expected),
                "lost": 0,  # in_sync: the target equals the scan
                "elapsed_s": round(time.monotonic() - started, 1),
            },
        )
