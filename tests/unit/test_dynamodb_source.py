"""The boto3 side of the full load without AWS: AWS's clock from Date headers, snapshot events, Scan paging."""

from __future__ import annotations

import base64
import threading
from decimal import Decimal
from email.utils import formatdate
from typing import Any

import pytest

import kcl_relay.source.dynamodb as source
from kcl_relay.cdc.event import SNAPSHOT_SHARD, Position
from kcl_relay.cdc.values import from_item
from kcl_relay.source.dynamodb import (
    CLOCK_WINDOW,
    SNAPSHOT_MARGIN,
    AwsClock,
    TableInfo,
    scan_segment,
    snapshot_event,
    typed_key,
    wire_item,
)
from kcl_relay.source.table_url import parse_table

INFO = TableInfo("orders", ("tenant", "id"), {"tenant": "S", "id": "N"}, item_count=0, size_bytes=0)
AWS_NOW = 1_800_000_000  # epoch seconds: what "AWS's clock" shows in these tests


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    fake = Monotonic()
    monkeypatch.setattr(source.time, "monotonic", fake)
    return fake


def answer(aws_seconds: float) -> dict[str, Any]:
    """A boto3 response whose Date header AWS wrote at `aws_seconds` (whole seconds, rounded down)."""
    return {"ResponseMetadata": {"HTTPHeaders": {"date": formatdate(aws_seconds, usegmt=True)}}}


def test_the_clock_is_a_lower_bound_of_aws_time(monotonic: Monotonic) -> None:
    clock = AwsClock()
    clock.observe(answer(AWS_NOW + 0.9))  # the header says AWS_NOW: up to a second below the truth
    assert clock.observed
    assert clock.now() == AWS_NOW
    monotonic.now += 2.5
    assert clock.now() == AWS_NOW + 2.5  # monotonic time goes on, whatever this machine's wall clock does


def test_the_tightest_recent_bound_wins(monotonic: Monotonic) -> None:
    clock = AwsClock()
    clock.observe(answer(AWS_NOW + 0.9))
    monotonic.now += 0.2
    clock.observe(answer(AWS_NOW + 1.1))  # a second boundary just passed: this header is 0.1 s below the truth
    assert clock.now() == pytest.approx(AWS_NOW + 1.0)


def test_old_observations_stop_counting(monotonic: Monotonic) -> None:
    clock = AwsClock()
    clock.observe(answer(AWS_NOW + 5))  # a high bound...
    monotonic.now += CLOCK_WINDOW + 1
    clock.observe(answer(AWS_NOW + CLOCK_WINDOW + 1))  # ...leaves the window: this machine's drift cannot add up
    assert clock.now() == AWS_NOW + CLOCK_WINDOW + 1
    monotonic.now += CLOCK_WINDOW + 1  # nothing recent at all: the latest still bounds, loosely
    assert clock.now() == AWS_NOW + 2 * CLOCK_WINDOW + 2


def test_without_a_date_header_this_machines_clock(monotonic: Monotonic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source.time, "time", lambda: 1234.5)
    clock = AwsClock()
    clock.observe({"ResponseMetadata": {"HTTPHeaders": {}}})
    clock.observe({"ResponseMetadata": {"HTTPHeaders": {"date": "not a date"}}})
    assert not clock.observed
    assert clock.now() == 1234.5


def test_the_snapshot_version_keeps_the_margin(monotonic: Monotonic) -> None:
    clock = AwsClock()
    clock.observe(answer(AWS_NOW))
    assert clock.snapshot_version() == int((AWS_NOW - SNAPSHOT_MARGIN) * 1_000_000)


def test_a_clock_ahead_here_changes_nothing(monotonic: Monotonic, monkeypatch: pytest.MonkeyPatch) -> None:
    """The danger the AWS clock avoids: a wall clock here that runs ahead would stamp items too new."""
    monkeypatch.setattr(source.time, "time", lambda: AWS_NOW + 3600.0)
    clock = AwsClock()
    clock.observe(answer(AWS_NOW))
    assert clock.snapshot_version() < AWS_NOW * 1_000_000


def test_snapshot_event_of_a_scanned_item() -> None:
    raw = {
        "tenant": {"S": "a"},
        "id": {"N": "1.50"},
        "blob": {"B": b"\x00\xff"},
        "blobs": {"BS": [b"\x02", b"\x01"]},
        "doc": {"M": {"n": {"N": "7"}, "l": {"L": [{"B": b"x"}, {"NULL": True}]}}},
    }
    event = snapshot_event(raw, INFO, version=42, counter=7)
    assert event.op == "INSERT" and event.table_name == "orders"
    assert event.key == {"tenant": "a", "id": Decimal("1.5")}
    assert event.key_types == {"tenant": "S", "id": "N"}
    assert event.version == 42
    assert event.position == Position(SNAPSHOT_SHARD, "7")
    assert event.image is not None
    assert event.image["blob"] == base64.b64encode(b"\x00\xff").decode()
    assert event.image["blobs"] == sorted([base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02").decode()])
    assert event.image["doc"]["l"] == [base64.b64encode(b"x").decode(), None]


def test_snapshot_event_refuses_what_the_decoder_refuses() -> None:
    with pytest.raises(ValueError, match="not a DynamoDB number"):
        snapshot_event({"tenant": {"S": "a"}, "id": {"N": "1"}, "x": {"N": "one"}}, INFO, 1, 1)
    with pytest.raises(ValueError, match="without its key"):
        snapshot_event({"tenant": {"S": "a"}}, INFO, 1, 1)


@pytest.mark.parametrize(
    "typed",
    [
        {"tenant": {"S": "ü"}, "id": {"N": "-12345678901234567890123456789012345678"}},
        {"tenant": {"S": ""}, "id": {"N": "0.000001"}},
        {"tenant": {"S": "x"}, "id": {"N": "1E+5"}},
    ],
)
def test_typed_key_round_trip(typed: dict[str, Any]) -> None:
    key = from_item(wire_item(typed))
    again = typed_key(key, INFO.key_types)
    assert from_item(wire_item(again)) == key


def test_typed_key_of_a_binary_key() -> None:
    key = from_item(wire_item({"k": {"B": b"\x00\x01"}}))
    assert typed_key(key, {"k": "B"}) == {"k": {"B": b"\x00\x01"}}


class FakeDynamoDB:
    """Scan pages from a list; records each request and the clock reading before it."""

    def __init__(self, pages: list[list[dict[str, Any]]], clock: AwsClock, monotonic: Monotonic) -> None:
        self.pages, self.clock, self.monotonic = pages, clock, monotonic
        self.requests: list[dict[str, Any]] = []

    def scan(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        index = len(self.requests) - 1
        self.monotonic.now += 1.0  # each request takes a second
        response: dict[str, Any] = {"Items": self.pages[index], **answer(AWS_NOW + index + 1)}
        if index + 1 < len(self.pages):
            response["LastEvaluatedKey"] = {"tenant": {"S": f"after-{index}"}}
        return response


def test_scan_segment_pages_with_versions_taken_before_each_request(monotonic: Monotonic) -> None:
    clock = AwsClock()
    clock.observe(answer(AWS_NOW))
    pages = [[{"tenant": {"S": "a"}}], [], [{"tenant": {"S": "b"}}]]
    ddb = FakeDynamoDB(pages, clock, monotonic)
    spec = parse_table("dynamodb://aws/orders?page-size=25&consistent-read=true&segments=8")
    got = list(scan_segment(ddb, spec, 3, 8, clock, threading.Event()))
    assert [page.items for page in got] == pages
    assert [page.last for page in got] == [False, False, True]
    assert [page.version for page in got] == [
        int((AWS_NOW + offset - SNAPSHOT_MARGIN) * 1_000_000) for offset in (0, 1, 2)
    ]
    first = {"TableName": "orders", "ConsistentRead": True, "Segment": 3, "TotalSegments": 8, "Limit": 25}
    assert ddb.requests[0] == first
    assert ddb.requests[1] == {**first, "ExclusiveStartKey": {"tenant": {"S": "after-0"}}}


def test_scan_segment_without_segments_and_stop(monotonic: Monotonic) -> None:
    clock = AwsClock()
    ddb = FakeDynamoDB([[], [], []], clock, monotonic)
    stop = threading.Event()
    pages = scan_segment(ddb, parse_table("dynamodb://aws/orders"), 0, 1, clock, stop)
    next(pages)
    stop.set()
    assert list(pages) == []
    assert ddb.requests == [{"TableName": "orders", "ConsistentRead": False}]
