"""The statement executor: connections, transactions, retries and bulk results, for any dialect.

The apply algorithm (writer.py, strategy/) decides which statements to run; this module runs them: one connection per
writer, a transaction per apply that is retried as a whole on transient failures, bulk statements in bounded chunks
whose rejected rows are found and explained without running the whole chunk row by row, and reads by key in chunks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from kcl_relay.sink.dialect import BulkOutcome, Dialect
from kcl_relay.sink.retry import RetryPolicy, TransientError, call_with_retry, describe_error, is_transient
from kcl_relay.sink.target import TargetSpec

__all__ = ["BulkResult", "Read", "StatementExecutor"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Params = tuple[Any, ...]


@dataclass(frozen=True)
class Read:
    """Rows by key: `chunk` keys per statement, sql_for(n) taking n keys' parameters in a row."""

    keys: Sequence[Params]
    sql_for: Callable[[int], str]
    chunk: int


@dataclass
class BulkResult:
    """Outcome of a bulk statement over rows 0..n-1."""

    counts: list[int | None] = field(default_factory=list)  # rows written per row; None: unknown or rejected
    unknown_written: int = 0  # rows written among those whose count is None and that were not rejected
    rejected: dict[int, str] = field(default_factory=dict)  # row -> the database's reason


class StatementExecutor:
    """Runs a dialect's statements on one connection. Not thread-safe: one executor per writer."""

    def __init__(self, spec: TargetSpec, dialect: Dialect, retry: RetryPolicy, engine: Engine | None = None) -> None:
        self.spec = spec
        self.dialect = dialect
        self.retry = retry
        self.statements = 0  # database calls made: for tests and metrics
        self.retries = 0  # transactions retried after a transient failure: for metrics
        self._engine = engine or spec.create_engine(poolclass=NullPool)
        self._conn: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._count_lock = threading.Lock()  # statements are counted from the read threads too

    # ---- connections and transactions ----
    def connection(self) -> Any:
        if self._conn is None:
            conn = self._engine.raw_connection()
            self.dialect.driver.prepare(conn)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._drop_connection()
        self._engine.dispose()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
            except Exception as exc:  # already broken: nothing left to release
                log.debug("closing a broken connection failed: %s", describe_error(exc))

    def transaction(self, work: Callable[[Any], T], ddl: bool = False) -> T:
        """Run work(cursor) and commit before returning; retried as a whole on transient failures and on failures
        about the database's state rather than a row (a missing table, a revoked privilege: Dialect.is_outage), which
        someone can fix while the relay waits.

        For DDL also on errors a concurrent CREATE ... IF NOT EXISTS of another worker or processor can cause
        (PostgreSQL: the table's row type or a catalog row that already exists); the retry finds the table there."""

        def attempt() -> T:
            try:
                conn = self.connection()
            except Exception as exc:
                # A server that cannot be reached is down, restarting or not ready yet (a CrateDB node that is still
                # starting answers 400 to the driver's handshake): never about the batch, so wait for it. A file
                # that cannot be opened (SQLite) stays unopenable.
                if not self.dialect.features.server:
                    raise
                raise TransientError(f"cannot connect to {self.spec.describe()}: {describe_error(exc)}") from exc
            cursor = conn.cursor()
            try:
                self.dialect.driver.begin(cursor)
                value = work(cursor)
                self.dialect.driver.commit(conn)
                return value
            except BaseException as exc:
                self._abort(conn, exc)
                raise
            finally:
                with contextlib.suppress(Exception):  # the connection may be gone already
                    cursor.close()

        transient = self._ddl_race_or_retryable if ddl else self.retryable
        return call_with_retry(attempt, self.retry, transient=transient, on_retry=self._count_retry)

    def _count_retry(self, _exc: BaseException) -> None:
        self.retries += 1

    def retryable(self, exc: BaseException) -> bool:
        """Transient, or an outage of the table's state: worth trying again later."""
        orig = getattr(exc, "orig", None)  # SQLAlchemy wraps driver errors
        return is_transient(exc) or self.dialect.is_outage(orig if isinstance(orig, BaseException) else exc)

    def _ddl_race_or_retryable(self, exc: BaseException) -> bool:
        orig = getattr(exc, "orig", None)
        return self.retryable(exc) or self.dialect.is_ddl_race(orig if isinstance(orig, BaseException) else exc)

    def _abort(self, conn: Any, exc: BaseException) -> None:
        if isinstance(exc, Exception) and is_transient(exc):
            self._drop_connection()  # the next attempt starts on a fresh connection
            return
        try:
            self.dialect.driver.rollback(conn)
        except Exception:
            self._drop_connection()

    # ---- statements ----
    def _count(self, calls: int = 1) -> None:
        with self._count_lock:
            self.statements += calls

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        self._count()
        return function(*args)

    def execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement; returns its row count (negative when the driver does not know)."""
        self._call(cursor.execute, sql, params)
        return int(cursor.rowcount)

    def execute_all(self, cursor: Any, statements: Sequence[str]) -> None:
        for statement in statements:
            self._call(cursor.execute, statement)

    def fetch(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return self._call(self.dialect.driver.fetch, cursor, sql, params)

    def read(self, cursor: Any, keys: Sequence[Params], sql_for: Callable[[int], str], chunk: int) -> list:
        """SELECT rows by key, `chunk` keys per statement (sql_for(n) takes n keys' parameters in a row)."""
        return self.read_all(cursor, [Read(keys, sql_for, chunk)])[0]

    def read_all(self, cursor: Any, reads: Sequence[Read]) -> list[list[Sequence[Any]]]:
        """Several reads by key; their statements run concurrently where the dialect allows it (CrateDB: every
        statement stands alone, and a Get costs more in planning and round trips than in work)."""
        jobs = []
        for index, read in enumerate(reads):
            for start in range(0, len(read.keys), read.chunk):
                part = read.keys[start : start + read.chunk]
                jobs.append((index, read.sql_for(len(part)), [value for key in part for value in key]))
        results: list[list[Sequence[Any]]] = [[] for _ in reads]
        if self.dialect.features.parallel_reads <= 1 or len(jobs) <= 1:
            for index, sql, params in jobs:
                results[index].extend(self.fetch(cursor, sql, params))
            return results
        connection = self.connection()

        def fetch_alone(job: tuple[int, str, list[Any]]) -> tuple[int, list[Sequence[Any]]]:
            index, sql, params = job
            own = connection.cursor()  # cursors are not shared between threads; the HTTP client is
            try:
                return index, self.dialect.driver.fetch(own, sql, params)
            finally:
                own.close()

        with self._count_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.dialect.features.parallel_reads, thread_name_prefix="kcl-relay-read"
                )
        self._count(len(jobs))
        for index, records in self._pool.map(fetch_alone, jobs):
            results[index].extend(records)
        return results

    def _in_savepoint(self, cursor: Any, function: Callable[..., T], *args: Any) -> T:
        """Run one statement so that a row error leaves the transaction usable (PostgreSQL aborts it otherwise)."""
        if not self.dialect.features.savepoints:
            return self._call(function, *args)
        self._call(self.dialect.driver.savepoint, cursor)
        try:
            value = self._call(function, *args)
        except Exception as exc:
            if self.dialect.is_row_error(exc) and not is_transient(exc):
                self._call(self.dialect.driver.rollback_to, cursor)
            raise
        self._call(self.dialect.driver.release, cursor)
        return value

    def _row_error(self, exc: BaseException) -> bool:
        return self.dialect.is_row_error(exc) and not is_transient(exc)

    def run_alone(self, cursor: Any, sql: str, params: Params) -> str | None:
        """Run one row's statement; None when it went through, else the database's reason for rejecting the row.
        Errors that are not about the row raise."""
        out = BulkResult(counts=[None])
        self._one(cursor, sql, params, 0, out)
        return out.rejected.get(0)

    def _reason(self, exc: BaseException) -> str:
        return f"rejected by {self.dialect.name}: {describe_error(exc)}"

    def bulk(
        self, cursor: Any, sql: str, rows: Sequence[Params], chunk: int, version_checked: bool = False
    ) -> BulkResult:
        """Run `sql` for every row, `chunk` rows per bulk statement. Rows the database rejects are found (and the
        good rows of their chunk applied) by splitting the chunk, so one bad row costs a few statements, not one
        per row; a chunk whose every row fails is split down to single rows too, each rejection its own. Errors
        that are not about a row raise (the transaction retries outages, see transaction()).

        `version_checked`: the statement names the row version it expects (CrateDB: _seq_no and _primary_term); a
        row whose version changed is not written (count 0), which CrateDB's bulk reports as a version conflict."""
        out = BulkResult(counts=[None] * len(rows))
        for start in range(0, len(rows), chunk):
            self._bulk_part(cursor, sql, rows, start, min(start + chunk, len(rows)), out, version_checked)
        return out

    def _bulk_part(
        self, cursor: Any, sql: str, rows: Sequence[Params], start: int, end: int, out: BulkResult, checked: bool
    ) -> None:
        try:
            outcome: BulkOutcome = self._in_savepoint(
                cursor, self.dialect.driver.run_many, cursor, sql, rows[start:end]
            )
        except Exception as exc:
            if not self._row_error(exc):
                raise
            if end - start == 1:
                out.rejected[start] = self._reason(exc)
                return
            # The whole statement failed for a row's values (CrateDB: an analysis error, PostgreSQL: the first bad
            # row): split it to apply the good rows and pin down the bad ones.
            middle = (start + end) // 2
            self._bulk_part(cursor, sql, rows, start, middle, out, checked)
            self._bulk_part(cursor, sql, rows, middle, end, out, checked)
            return
        if outcome.counts is None:
            out.unknown_written += outcome.total
            return
        for offset, count in enumerate(outcome.counts):
            index = start + offset
            if count >= 0:
                out.counts[index] = count
                continue
            message = outcome.errors.get(offset)
            if message is not None and self.dialect.is_stale(message):
                out.counts[index] = 0  # the guard kept a newer row: nothing written, nothing wrong
                continue
            if checked and message is not None and self.dialect.is_version_conflict(message):
                out.counts[index] = 0
                continue
            if message is None:  # rejected without a reason: run it alone to learn it
                out.counts[index] = self._one(cursor, sql, rows[index], index, out)
                continue
            error = self.dialect.row_rejection(message)
            if not self._row_error(error):
                raise error
            out.rejected[index] = self._reason(error)

    def _one(self, cursor: Any, sql: str, row: Params, index: int, out: BulkResult) -> int | None:
        try:
            return self._in_savepoint(cursor, self.dialect.driver.run_one, cursor, sql, row)
        except Exception as exc:
            if self.dialect.is_stale(str(exc)):
                return 0
            if not self._row_error(exc):
                raise
            out.rejected[index] = self._reason(exc)
            return None
