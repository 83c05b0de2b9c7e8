"""Which failures the sink retries, and how: exponential backoff, bounded, then the exception propagates."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from crate.client import exceptions as crate_errors
from sqlalchemy import exc as sa_exc

from kcl_relay.sink.retry import RetryPolicy, TransientError, call_with_retry, describe_error, is_transient


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        TransientError("rows kept changing"),
        sqlite3.OperationalError("database is locked"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        crate_errors.ConnectionError("No more Servers available, exception from last server: timed out"),
        crate_errors.ProgrammingError("503 Server Error: Service Unavailable"),
        crate_errors.ProgrammingError("UnavailableShardsException[[doc.t][2] primary shard is not active]"),
        crate_errors.ProgrammingError("400 Client Error: Bad Request"),  # a CrateDB node still starting
        crate_errors.ProgrammingError("DocumentMissingException[[AgMyLjUGZ2xvYmV4]: document missing]"),  # a race
        crate_errors.ProgrammingError(  # a table just created by another worker: its shards still recovering
            "IllegalIndexShardStateException[CurrentState[RECOVERING] operations only allowed when shard state is one "
            "of [POST_RECOVERY, STARTED]]"
        ),
        crate_errors.ProgrammingError("ClusterBlockException[blocked by: [SERVICE_UNAVAILABLE/1/state not recovered"),
        sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        sqlite3.OperationalError("no such table: t"),
        sqlite3.IntegrityError("UNIQUE constraint failed"),
        psycopg.errors.UndefinedTable('relation "t" does not exist'),
        psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
        crate_errors.ProgrammingError("RelationUnknown[Relation 'doc.t' unknown]"),
        crate_errors.ProgrammingError("SQLParseException[Cannot cast value `x` to type `bigint`]"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_retries_transient_failures_with_growing_bounded_delays() -> None:
    calls: list[int] = []
    delays: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionResetError("reset")
        return "done"

    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=3.0)
    assert call_with_retry(flaky, policy, sleep=delays.append) == "done"
    assert len(calls) == 4 and len(delays) == 3
    assert all(0 <= delay <= cap for delay, cap in zip(delays, (1.0, 2.0, 3.0), strict=True))


def test_gives_up_after_the_limit_and_raises_the_last_error() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        call_with_retry(down, RetryPolicy(attempts=3), sleep=lambda _: None)
    assert len(calls) == 3


def test_gives_up_once_failing_lasted_the_timeout() -> None:
    """A database that stays down: retries with capped delays until `timeout` seconds of failure, then it raises."""
    now = [0.0]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds

    def down() -> None:
        now[0] += 0.1  # each attempt takes a moment
        raise ConnectionRefusedError(111, "Connection refused")

    policy = RetryPolicy(timeout=120.0, base_delay=0.5, max_delay=10.0)
    with pytest.raises(ConnectionRefusedError):
        call_with_retry(down, policy, sleep=sleep, clock=lambda: now[0])
    assert 110.0 <= now[0] <= 120.0 + 10.0
    assert max(delays) <= 10.0 and len(delays) >= 12


def test_a_database_back_within_the_timeout_is_ridden_out() -> None:
    now = [0.0]
    outage_until = 45.0

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def flaky() -> str:
        if now[0] < outage_until:
            raise ConnectionRefusedError(111, "Connection refused")
        return "applied"

    assert call_with_retry(flaky, RetryPolicy(timeout=300.0), sleep=sleep, clock=lambda: now[0]) == "applied"
    assert now[0] >= outage_until


def test_non_transient_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise psycopg.errors.UndefinedTable("relation does not exist")

    with pytest.raises(psycopg.errors.UndefinedTable):
        call_with_retry(broken, RetryPolicy(attempts=5), sleep=lambda _: None)
    assert len(calls) == 1


def test_describe_error_is_one_short_line() -> None:
    assert describe_error(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert len(describe_error(ValueError("x" * 10_000))) == 500
