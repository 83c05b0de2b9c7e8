"""The full load's pieces that need neither AWS nor a database: the stream's start, progress lines, the hint."""

from __future__ import annotations

import re
import time
from datetime import timezone

import pytest

from kcl_relay import fullload
from kcl_relay.fullload import STREAM_LEAD, Snapshot, _duration, _stream_url, stream_start
from kcl_relay.sink.target import parse_target
from kcl_relay.source.dynamodb import SNAPSHOT_MARGIN, AwsClock, TableInfo
from kcl_relay.source.table_url import parse_table

INFO = TableInfo("orders", ("id",), {"id": "S"}, item_count=1000, size_bytes=0)


class FixedClock(AwsClock):
    def __init__(self, now: float) -> None:
        super().__init__()
        self._now = now

    def now(self) -> float:
        return self._now


def test_the_stream_starts_before_every_snapshot_version() -> None:
    clock = FixedClock(1_800_000_000.7)
    start = stream_start(clock)
    assert start.tzinfo == timezone.utc
    assert start.timestamp() == 1_800_000_000 - SNAPSHOT_MARGIN - STREAM_LEAD  # whole seconds, rounded down
    assert start.timestamp() * 1_000_000 < clock.snapshot_version()


def snapshot(items: int, elapsed: float, done: int = 0, estimate: int = 1000) -> Snapshot:
    info = TableInfo("orders", ("id",), {"id": "S"}, item_count=estimate, size_bytes=0)
    spec = parse_table("dynamodb://aws/orders?segments=4")
    shot = Snapshot(
        spec, parse_target("sqlite:////tmp/x.db", "t"), None, info, FixedClock(0), sink_factory=lambda: None
    )  # type: ignore[arg-type,return-value]
    shot.started = time.monotonic() - elapsed
    shot.stats.items, shot.stats.segments_done = items, done
    return shot


def test_progress_with_the_estimate() -> None:
    line = snapshot(items=2500, elapsed=10.0, done=1, estimate=10000).progress()
    assert re.fullmatch(
        r"snapshot: 2500 items of about 10000 \(25%; DynamoDB's estimate\), 2[45]\d/s, 1/4 segments done, "
        r"about \d+s left",
        line,
    ), line


def test_progress_over_a_handful_of_items_names_no_rate() -> None:
    line = snapshot(items=250, elapsed=10.0, done=1).progress()
    assert line == "snapshot: 250 items of about 1000 (25%; DynamoDB's estimate), 1/4 segments done"


def test_progress_without_an_estimate_or_beyond_it() -> None:
    assert snapshot(items=10, elapsed=1.0, estimate=0).progress().startswith("snapshot: 10 items, ")
    beyond = snapshot(items=1200, elapsed=1.0).progress()
    assert "(100%; DynamoDB's estimate)" in beyond and "left" not in beyond


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (65, "1m05s"), (3725, "1h02m")])
def test_duration(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


def test_the_stream_url_to_go_on_with_never_has_credentials() -> None:
    spec = parse_table("dynamodb://KEY:SECRET@localhost:4566/orders?stream=orders-cdc&region=eu-central-1")
    url = _stream_url(spec, "kcl-relay-orders-cdc-orders-12345678")
    assert url == (
        "kinesis+dynamodb+cdc://localhost:4566/orders-cdc?region=eu-central-1&app=kcl-relay-orders-cdc-orders-12345678"
    )
    aws = parse_table("dynamodb://aws/orders?stream=s")
    assert _stream_url(aws, "app").startswith("kinesis+dynamodb+cdc://aws/s?")
    assert fullload.INTERRUPTED == 130
