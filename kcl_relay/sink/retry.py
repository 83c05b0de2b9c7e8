"""Retry with exponential backoff, for failures that go away by themselves.

Transient: connection refused/reset/closed, timeouts, CrateDB unavailable or overloaded (HTTP 5xx), PostgreSQL
connection loss, serialization failure and deadlock, SQLite "database is locked". The executor also retries what
a dialect calls an outage of the table's state (Dialect.is_outage: a missing table, a revoked privilege), never a
row's rejection. Everything else raises at once.
A database that is down is waited for: retries go on, with capped backoff, until `RetryPolicy.timeout` seconds have
passed since the first failure (the `retry-timeout` option, minutes by default); then the last exception
propagates, so the caller does not checkpoint.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kcl_relay.options import RETRY_TIMEOUT

__all__ = ["RetryPolicy", "TransientError", "call_with_retry", "describe_error", "is_transient"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class TransientError(RuntimeError):
    """Raised by the relay itself for a condition worth retrying (e.g. rows kept changing under a delete)."""


DEFAULT_RETRY_TIMEOUT = RETRY_TIMEOUT  # the retry-timeout option's (kcl_relay.options says why 300 s)


@dataclass(frozen=True)
class RetryPolicy:
    timeout: float = DEFAULT_RETRY_TIMEOUT  # give up once a failure has lasted this long (seconds)
    attempts: int | None = None  # give up after this many calls, the first included (None: only the timeout)
    base_delay: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 15.0  # the cap: a database that comes back is noticed within seconds

    def delay(self, retry: int) -> float:
        # Full jitter keeps several workers that failed together from retrying in lockstep.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))

    def exhausted(self, calls: int, elapsed: float, next_delay: float) -> bool:
        if self.attempts is not None and calls >= self.attempts:
            return True
        return elapsed + next_delay > self.timeout


# CrateDB's HTTP client keeps the server's message but drops the HTTP status and error code, so the exception
# names that CrateDB uses for unavailable shards or nodes, overload and killed jobs are matched instead.
_CRATE_TRANSIENT = re.compile(
    r"\b5\d\d Server Error\b|No more Servers available|Server not available|Connection (?:refused|reset|aborted)"
    r"|timed? ?out|Max retries exceeded|RemoteDisconnected|UnavailableShards|NoShardAvailable|NodeNotConnected"
    r"|NodeDisconnected|NodeClosed|EsRejectedExecution|CircuitBreaking|VersionConflictEngine|JobKilled"
    r"|ShardNotFound|PrimaryMissing|RetryOnPrimary"
    # A table another worker has just created: its shards are still recovering (seen from CrateDB 6.4.3 as
    # "IllegalIndexShardStateException[CurrentState[RECOVERING] operations only allowed when shard state is ...]").
    r"|IllegalIndexShardState"
    # Another worker deleted the row between this upsert's conflict check and its update: the batch, every statement
    # of it guarded, is applied again from fresh reads.
    r"|DocumentMissing"
    # A node that is starting: its cluster state is not recovered yet, and plain HTTP errors without a CrateDB
    # exception in the body (seen as "400 Client Error: Bad Request" while CrateDB 6.4 boots).
    r"|ClusterBlockException|state not recovered|^400 Client Error: Bad Request$",
    re.IGNORECASE,
)
_PG_TRANSIENT_STATES = ("40001", "40P01", "55P03")  # serialization failure, deadlock, lock not available
_PG_TRANSIENT_CLASSES = ("08", "57", "53")  # connection exception, operator intervention, insufficient resources


def _crate_transient(exc: BaseException) -> bool | None:
    try:
        from crate.client import exceptions as crate_errors
    except ImportError:  # pragma: no cover - the driver is a dependency
        return None
    if isinstance(exc, crate_errors.ConnectionError):
        return True
    if isinstance(exc, crate_errors.Error):
        return bool(_CRATE_TRANSIENT.search(str(exc)))
    return None


def _postgres_transient(exc: BaseException) -> bool | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the driver is a dependency
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    if state in _PG_TRANSIENT_STATES or state[:2] in _PG_TRANSIENT_CLASSES:
        return True
    if isinstance(exc, psycopg.OperationalError):
        return not state  # raised by the client itself: connection failed, lost or timed out
    if isinstance(exc, psycopg.InterfaceError):
        return "closed" in str(exc) or "lost" in str(exc)
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later may succeed."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps driver errors
    if isinstance(orig, BaseException) and orig is not exc:
        return is_transient(orig) or bool(getattr(exc, "connection_invalidated", False))
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return "locked" in message or "busy" in message
    for check in (_crate_transient, _postgres_transient):
        verdict = check(exc)
        if verdict is not None:
            return verdict
    return False


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """The exception's class and first line: enough to act on, short enough for a log or a dead letter."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:limit]


def call_with_retry(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    transient: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `operation` until it succeeds, a non-transient error occurs, or the policy's limits are reached."""
    retry = 0
    first_failure: float | None = None
    while True:
        try:
            return operation()
        except Exception as exc:
            retry += 1
            now = clock()
            first_failure = now if first_failure is None else first_failure
            delay = policy.delay(retry - 1)
            if not transient(exc) or policy.exhausted(retry, now - first_failure, delay):
                raise
            log.warning(
                "transient failure (%s), retry %d in %.1f s (giving up %.0f s after the first failure)",
                describe_error(exc),
                retry,
                delay,
                policy.timeout,
            )
            if on_retry is not None:
                on_retry(exc)
            sleep(delay)
