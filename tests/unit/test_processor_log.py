"""A worker whose processor gave up on the database names the real cause on stderr, from the processor's log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import kcl_relay.kcl.supervisor as supervisor
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.processor_log import PROCESSOR_LOG, failure_cause
from kcl_relay.kcl.status import ShardStatus, write_status
from kcl_relay.kcl.supervisor import WorkerPlan
from kcl_relay.logs import configure_file_logging
from tests.support.fake_daemon import ScriptedDaemon

A, B = "shardId-000000000000", "shardId-000000000001"
SECRET = "Pw1-a9Xk2mQ7"


class DuplicateObject(Exception):
    """As psycopg.errors.DuplicateObject: a message of several lines."""


@pytest.fixture
def processor_log(tmp_path: Path) -> Iterator[logging.Logger]:
    """The processors' own logging (kcl_relay.logs) into tmp_path/processor.log; the root logger restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_file_logging(tmp_path / PROCESSOR_LOG, "warn")
    yield logging.getLogger("kcl_relay.kcl.processor")
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = saved


def fail(log: logging.Logger, shard: str, error: Exception) -> None:
    """What RelayProcessor._flush_and_checkpoint logs when the sink gives up."""
    try:
        try:
            raise ConnectionError(f"crate://crate:{SECRET}@db:4200 first try")
        except ConnectionError:
            raise error  # noqa: B904 - chained implicitly, as a sink's retry re-raises
    except Exception:
        log.exception("shard %s: writing to the database failed; exiting without checkpoint", shard)


def test_the_cause_is_the_last_exceptions_first_line(tmp_path: Path, processor_log: logging.Logger) -> None:
    processor_log.warning("shard %s: checkpoint refused (ShutdownException)", A)
    fail(processor_log, A, DuplicateObject('type "orders_t" already exists\nDETAIL: something else'))
    processor_log.warning("shard %s: something later", B)
    assert failure_cause(tmp_path, A) == f'{__name__}.DuplicateObject: type "orders_t" already exists'
    assert failure_cause(tmp_path, B) is None, "B did not fail"


def test_the_latest_failure_of_the_shard_counts_and_secrets_are_masked(
    tmp_path: Path, processor_log: logging.Logger
) -> None:
    fail(processor_log, A, ValueError("an older one"))
    fail(processor_log, A, RuntimeError(f"cannot reach postgresql://relay:{SECRET}@db:5432/app?sslmode=require"))
    cause = failure_cause(tmp_path, A)
    assert cause == "RuntimeError: cannot reach postgresql://relay:***@db:5432/app?sslmode=require"


def test_no_log_no_cause(tmp_path: Path) -> None:
    assert failure_cause(tmp_path, A) is None


def run_failing_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 0.01)
    write_status(tmp_path, ShardStatus(shard_id=A, failed=True))
    processor = ProcessorConfig(target_url="sqlite:///x.db", table="t", state_dir=str(tmp_path))
    plan = WorkerPlan("java", Path("jars"), {"applicationName": "app", "streamName": "s"}, processor, {})
    return supervisor._supervise(plan, ScriptedDaemon([]), tmp_path)  # type: ignore[arg-type]


def test_the_workers_last_line_names_the_cause(
    tmp_path: Path,
    processor_log: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail(processor_log, A, DuplicateObject('type "orders_t" already exists'))
    assert run_failing_worker(tmp_path, monkeypatch) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    cause = f'{__name__}.DuplicateObject: type "orders_t" already exists'
    assert f"kcl-relay: a processor stopped: writing to the database failed on {A}: {cause}; stopping the worker" in (
        lines
    )
    assert lines[-1] == (
        f"kcl-relay: writing to the database failed on {A}: {cause}; stopped without checkpoint there: a restart "
        f"delivers those records again (details in {tmp_path / PROCESSOR_LOG})"
    )
    assert SECRET not in "\n".join(lines)


def test_without_a_cause_the_last_line_points_at_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_failing_worker(tmp_path, monkeypatch) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"kcl-relay: writing to the database failed on {A} (the cause is in {PROCESSOR_LOG}); ")


def test_warnings_and_errors_without_a_traceback_are_no_cause(tmp_path: Path, processor_log: logging.Logger) -> None:
    fail(processor_log, A, DuplicateObject("the real one"))
    processor_log.warning("shard %s: transient failure (OperationalError: locked), retry 1 in 0.5 s", A)
    processor_log.error("shard %s: an error without a traceback", A)
    try:
        raise ValueError("not about A")
    except ValueError:
        processor_log.exception("shard %s: something else failed", B)
    assert failure_cause(tmp_path, A) == f"{__name__}.DuplicateObject: the real one"
    assert failure_cause(tmp_path, B) == "ValueError: not about A"
