"""consumer=fanout through the real KCL: enhanced fan-out (SubscribeToShard) on kinesis-mock, the lease table on moto.

kinesis-mock (npm kinesis-local 0.6.2) serves RegisterStreamConsumer, DescribeStreamConsumer, DeregisterStreamConsumer
and SubscribeToShard on its plain port, over the HTTP/2 (h2c) the KCL's async Kinesis client speaks. moto has no
SubscribeToShard: the relay refuses consumer=fanout there before anything starts. kinesis-mock runs at DEBUG level
here so each test can count the Kinesis calls the KCL made: SubscribeToShard, never GetRecords.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from kcl_relay.localaws.kinesis_mock import KinesisMock, missing_requirements
from kcl_relay.localaws.server import LocalAws
from kcl_relay.sink.target import parse_target
from tests.support.e2e import ENV, app_name, cdc_record, new_stream, put_records, run_relay, source_url, state_dir
from tests.support.tables import read_items

MISSING_NODE = missing_requirements()
pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(bool(MISSING_NODE), reason=f"needs Node.js and npm for kinesis-mock: {MISSING_NODE}"),
]
T0 = 1_795_000_000_000_000
CONSUMER_LINE = re.compile(r"consumer=fanout: stream consumer (\S+) (registered|reused \(registered before\)), (\S+)")


@pytest.fixture(scope="module")
def mock() -> Iterator[KinesisMock]:
    with KinesisMock(log_level="DEBUG") as server:
        yield server


def mock_stream(mock: KinesisMock, shards: int = 2) -> str:
    kinesis = mock.client()
    name = f"s-{app_name()}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    return name


def changes(prefix: str, version: int, keys: int = 24) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """Inserts of `keys` items, a third of them modified, a third removed; and the end state: id -> v."""
    records = [cdc_record("INSERT", f"{prefix}{i}", version + i, v="a") for i in range(keys)]
    records += [cdc_record("MODIFY", f"{prefix}{i}", version + keys + i, v="b") for i in range(keys // 3)]
    records += [cdc_record("REMOVE", f"{prefix}{i}", version + 2 * keys + i) for i in range(2 * keys // 3, keys)]
    expected = {f"{prefix}{i}": ("b" if i < keys // 3 else "a") for i in range(2 * keys // 3)}
    return records, expected


def rows(target: str, table: str) -> dict[str, str | None]:
    return {item["id"]: item.get("v") for item in read_items(parse_target(target, table), {"id": "S"}).values()}


def kinesis_calls(mock: KinesisMock, since: int) -> Counter[str]:
    """Kinesis API calls kinesis-mock logged after byte `since` of its log, one per request id."""
    assert mock.log_path is not None
    text = mock.log_path.read_bytes()[since:].decode(errors="replace")
    requests = set(re.findall(r"x-amzn-RequestId=([0-9a-f-]+).*?action=(\w+)", text))
    return Counter(action for _, action in requests)


def log_size(mock: KinesisMock) -> int:
    assert mock.log_path is not None
    return mock.log_path.stat().st_size


def relay_fanout(aws: LocalAws, mock: KinesisMock, stream: str, target: str, table: str, app: str, **more: str) -> str:
    """One once=true run with consumer=fanout; its stderr."""
    url = source_url(
        mock.endpoint_url,
        stream,
        app=app,
        worker_id=f"{app}-w",  # a restart is the same worker: it resumes its own leases at once
        dynamodb_endpoint=aws.endpoint_url,
        consumer="fanout",
        once="true",
        **more,
    )
    done = run_relay(url, target, table)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def consumer_of(stderr: str) -> tuple[str, str, str]:
    """(name, registered | reused, ARN) from the relay's line at start."""
    match = CONSUMER_LINE.search(stderr)
    assert match, stderr[-3000:]
    return match[1], match[2].split()[0], match[3]


def consumers(mock: KinesisMock, stream: str) -> list[str]:
    kinesis = mock.client()
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    return sorted(consumer["ConsumerName"] for consumer in kinesis.list_stream_consumers(StreamARN=arn)["Consumers"])


def assert_fanout_reads(mock: KinesisMock, since: int, shards: int) -> None:
    calls = kinesis_calls(mock, since)
    assert calls["SubscribeToShard"] >= shards, calls
    assert calls["GetRecords"] == 0, calls


def test_moto_without_subscribe_to_shard_is_refused_before_start(aws: LocalAws, sqlite_url: str) -> None:
    stream = new_stream(aws)
    url = source_url(aws.endpoint_url, stream, app=app_name(), consumer="fanout", once="true")
    done = run_relay(url, sqlite_url, "t")
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "does not serve SubscribeToShard" in last and "use consumer=polling" in last, last
    assert "logs in" not in done.stderr  # the KCL never started
    kinesis = aws.client("kinesis")
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    assert kinesis.list_stream_consumers(StreamARN=arn)["Consumers"] == []  # asked before registering anything


@pytest.mark.parametrize("dialect", ["cratedb", "postgresql"])
def test_fanout_relay_ends_exact(
    aws: LocalAws, mock: KinesisMock, request: pytest.FixtureRequest, dialect: str
) -> None:
    target = request.getfixturevalue(f"{dialect}_url")
    stream, table, app = mock_stream(mock), f"fanout_{uuid.uuid4().hex[:8]}", app_name()
    records, expected = changes("k", T0)
    put_records(mock.client(), stream, records)
    since = log_size(mock)
    stderr = relay_fanout(aws, mock, stream, target, table, app)
    assert rows(target, table) == expected
    assert consumer_of(stderr)[:2] == (app, "registered")
    assert_fanout_reads(mock, since, shards=2)


def test_restart_reuses_the_consumer_and_reset_deregisters_it(
    aws: LocalAws, mock: KinesisMock, sqlite_url: str
) -> None:
    stream, app = mock_stream(mock), app_name()
    first, expected = changes("a", T0)
    put_records(mock.client(), stream, first)
    since = log_size(mock)
    stderr = relay_fanout(aws, mock, stream, sqlite_url, "t", app)
    name, how, arn = consumer_of(stderr)
    assert (name, how) == (app, "registered")
    assert rows(sqlite_url, "t") == expected
    assert_fanout_reads(mock, since, shards=2)
    properties = (state_dir(stderr) / "kcl.properties").read_text()
    assert "retrievalMode = FANOUT" in properties and f"fanoutConfig.consumerArn = {arn}" in properties

    # A restart finds the consumer by its derived name: the same ARN (kinesis-mock's hold the registration time).
    second, more = changes("b", T0 + 1000)
    gone = cdc_record("REMOVE", "a0", T0 + 2000)  # a row of the first run, removed across the restart
    put_records(mock.client(), stream, [*second, gone])
    stderr = relay_fanout(aws, mock, stream, sqlite_url, "t", app)
    assert consumer_of(stderr) == (app, "reused", arn)
    expected = {**{key: value for key, value in expected.items() if key != "a0"}, **more}
    assert rows(sqlite_url, "t") == expected
    assert consumers(mock, stream) == [app]

    # reset=true deregisters it (and the run registers a new one, reading every shard from its start again).
    stderr = relay_fanout(aws, mock, stream, sqlite_url, "t", app, reset="true")
    assert f"reset=true: deregistered stream consumer {app}" in stderr
    name, how, new_arn = consumer_of(stderr)
    assert (name, how) == (app, "registered") and new_arn != arn
    assert rows(sqlite_url, "t") == expected
    assert consumers(mock, stream) == [app]


def test_prepare_and_reset_without_the_kcl(mock: KinesisMock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer's lifecycle as plan_worker drives it, in process: register, reuse, a file's own ARN, reset."""
    from kcl_relay.kcl import consumer
    from kcl_relay.source.url import parse_source

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    stream, app = mock_stream(mock, shards=1), app_name()
    spec = parse_source(source_url(mock.endpoint_url, stream, consumer="fanout", app=app))
    said: list[str] = []
    props = {"applicationName": app, "streamName": stream, "retrievalMode": "FANOUT"}
    first = dict(props)
    consumer.prepare(spec, first, said.append)
    second = dict(props)
    consumer.prepare(spec, second, said.append)
    assert first[consumer.CONSUMER_ARN_KEY] == second[consumer.CONSUMER_ARN_KEY]
    assert [line.split(",")[0] for line in said] == [
        f"consumer=fanout: stream consumer {app} registered",
        f"consumer=fanout: stream consumer {app} reused (registered before)",
    ]
    # A file's own ARN: used as it is, never removed.
    own = {**props, consumer.CONSUMER_ARN_KEY: first[consumer.CONSUMER_ARN_KEY]}
    consumer.prepare(spec, own, said.append)
    assert own[consumer.CONSUMER_ARN_KEY] == first[consumer.CONSUMER_ARN_KEY]
    consumer.reset(spec, own, said.append)
    assert consumers(mock, stream) == [app]
    # reset=true with consumer=polling still removes the application's consumer.
    consumer.reset(spec, {**props, "retrievalMode": "POLLING"}, said.append)
    assert said[-1] == f"reset=true: deregistered stream consumer {app}"
    assert consumers(mock, stream) == []
    consumer.reset(spec, dict(props), said.append)  # nothing left: nothing said
    assert said[-1] == f"reset=true: deregistered stream consumer {app}" and len(said) == 4
