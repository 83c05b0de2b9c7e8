"""Run one KCL worker: start the MultiLangDaemon, report progress, stop gracefully on a signal or once caught up."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.daemon import Daemon
from kcl_relay.kcl.properties import SHUTDOWN_GRACE_MILLIS, write_properties
from kcl_relay.kcl.status import ShardStatus, latest_by_shard, read_statuses

PROGRESS_INTERVAL = 5.0
POLL_INTERVAL = 0.5
HAND_BACK_INTERVAL = 2.0  # during a graceful stop, between two hand-backs of this worker's leases
STOP_TIMEOUT = SHUTDOWN_GRACE_MILLIS / 1000 + 20  # the JVM's grace plus its own shutdown


def say(message: str) -> None:
    print(f"kcl-relay: {message}", file=sys.stderr, flush=True)


class Companion(Protocol):
    """Work that runs beside the KCL worker, in the supervisor (the full load's scan, for one)."""

    def start(self) -> None: ...

    def poll(self) -> str | None:
        """Report progress; return why it failed, once it has."""

    def finished_at(self) -> float | None:
        """The wall-clock time from which caught-up shards count for once=true; None while it still runs."""

    def stop(self) -> None:
        """Stop early (when not done yet) and wait for it."""


@dataclass
class WorkerPlan:
    """Everything one worker run needs, decided and validated before anything starts."""

    java: str
    jars: Path
    properties: dict[str, str]
    processor: ProcessorConfig
    aws_env: dict[str, str]  # credentials for the JVM, only ever by environment
    once: bool = False
    open_shards: Callable[[], set[str]] | None = None  # for once=true: the shards that must be caught up
    drop_env: tuple[str, ...] = ()  # variables of ours the JVM must not inherit
    companion: Companion | None = None  # runs beside the worker; once=true also waits for it
    # Hands this worker's leases back (conditional on the owner); called during a graceful stop once every
    # processor has flushed and checkpointed, as KCL 3.1.3's own shutdown keeps the JVM (and its leases) for up to
    # failoverTimeMillis after that.
    hand_back: Callable[[], None] | None = None


KEEP_STATE_DIRS = 10  # per application: the logs of the last runs
STATE_DIR_ENV = ("KCL_RELAY_STATE_DIR", "STATE_DIRECTORY")  # ours, or systemd's StateDirectory=


def make_state_dir(application_name: str) -> Path:
    """A fresh folder per worker run for its properties file, logs and shard status (two workers never share one)."""
    base = next((os.environ[name] for name in STATE_DIR_ENV if os.environ.get(name)), None)
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    prefix = f"kcl-relay-{application_name[:40]}-"
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    _prune(folder.parent, prefix, keep=KEEP_STATE_DIRS)
    return folder


def _prune(parent: Path, prefix: str, keep: int) -> None:
    """Restarts (systemd's Restart=on-failure) must not pile up folders: keep the newest few of this application."""
    folders = sorted((p for p in parent.glob(f"{prefix}*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class Progress:
    """Progress lines on stderr: events applied, rate, lag; and the throughput once it is over."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.last_report = self.started
        self.last_applied = 0  # at the last progress line
        self.first_applied_at: float | None = None  # wall clock, from the processors

    def report(self, statuses: dict[str, ShardStatus], final: bool = False) -> None:
        now = time.monotonic()
        applied = sum(status.applied for status in statuses.values())
        firsts = [s.first_applied_at for s in statuses.values() if s.first_applied_at]
        if firsts and self.first_applied_at is None:
            self.first_applied_at = min(firsts)
            say(f"first records applied {self.first_applied_at - self.started_wall:.1f} s after start")
        if final:
            self._summary(statuses, applied)
            return
        if now - self.last_report < PROGRESS_INTERVAL:
            return
        if not statuses:
            say("waiting for shard leases (a fresh lease table costs the KCL up to a minute)")
        else:
            rate = (applied - self.last_applied) / max(now - self.last_report, 1e-6)
            current = latest_by_shard(statuses).values()
            lags = [s.millis_behind for s in current if s.millis_behind is not None and not s.ended]
            dead = sum(status.dead_letters for status in statuses.values())
            lag = f"{max(lags)} ms" if lags else "unknown"
            say(f"{applied} events applied ({rate:.0f}/s), lag {lag}, {len(current)} shards, {dead} dead letters")
        self.last_report, self.last_applied = now, applied

    def _summary(self, statuses: dict[str, ShardStatus], applied: int) -> None:
        records = sum(status.records for status in statuses.values())
        dead = sum(status.dead_letters for status in statuses.values())
        line = f"done: {records} records read, {applied} events applied, {dead} dead letters"
        firsts = [s.first_applied_at for s in statuses.values() if s.first_applied_at]
        lasts = [s.last_applied_at for s in statuses.values() if s.last_applied_at]
        if firsts and lasts and max(lasts) > min(firsts):  # the processors' own clocks, taken at each flush
            line += f"; {records / (max(lasts) - min(firsts)):.0f} records/s from the first applied record to the last"
        say(line)


def caught_up(statuses: dict[str, ShardStatus], open_shards: set[str], since: float = 0.0) -> bool:
    """Every open shard has been read to its tip with nothing left unapplied (at a time after `since`)."""
    current = latest_by_shard(statuses)

    def done(status: ShardStatus) -> bool:
        return status.ended or (status.caught_up and status.updated_at >= since)

    return bool(open_shards) and all(shard in current and done(current[shard]) for shard in open_shards)


def processors_done(statuses: dict[str, ShardStatus], since: float) -> bool:
    """During a graceful stop: every shard this worker has a processor for has flushed and checkpointed (stopped,
    shard end) or has lost its lease; `since`: the stop request (wall clock), so a stopped status is this stop's.

    Then its leases can go back before the JVM exits: KCL 3.1.3's graceful shutdown stops lease renewal right
    after the processors' shutdown_requested, then waits failoverTimeMillis for a final shutdown that never
    completes (its consumers end as lease lost), so waiting for the JVM kept a stopped worker's shards idle as
    long as a crashed one's. No processor at all: nothing to go by, the hand-back waits for the JVM.
    """
    current = latest_by_shard(statuses).values()
    return bool(current) and all(
        status.ended or status.lease_lost or (status.stopped and status.updated_at >= since) for status in current
    )


def run_worker(plan: WorkerPlan) -> int:
    state_dir = Path(plan.processor.state_dir)
    properties_path = write_properties(state_dir / "kcl.properties", plan.properties)
    inherited = {name: value for name, value in os.environ.items() if name not in plan.drop_env}
    env = {**inherited, **plan.aws_env, **plan.processor.to_env()}
    daemon = Daemon(plan.java, plan.jars, properties_path, state_dir / "kcl.log", env)

    stop_requested: list[str] = []
    stop_requested_at: list[float] = []  # wall clock, for processors_done
    next_hand_back: float | None = None  # monotonic; None: not yet (processors still at work)

    def on_signal(signum: int, _frame: object) -> None:
        if stop_requested:  # a second Ctrl-C: stop now
            daemon.kill()
            return
        stop_requested.append(signal.Signals(signum).name)
        stop_requested_at.append(time.time())
        daemon.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    say(
        f"worker of application {plan.properties['applicationName']} on stream {plan.properties['streamName']}; "
        f"logs in {state_dir}"
    )
    progress = Progress()
    companion = plan.companion
    companion_failed: str | None = None
    daemon.start()
    try:
        if companion is not None:
            companion.start()
        open_shards: set[str] = set()
        next_shard_check = 0.0
        stop_deadline: float | None = None
        killed = False
        while daemon.poll() is None:
            time.sleep(POLL_INTERVAL)
            statuses = read_statuses(state_dir)
            progress.report(statuses)
            since: float | None = 0.0  # caught-up shards count from then on; None: not yet (the companion runs)
            if companion is not None:
                companion_failed = companion_failed or companion.poll()
                if companion_failed and not stop_requested:
                    say(f"error: {companion_failed}: stopping")
                    stop_requested.append("failure")
                    daemon.request_stop()
                since = companion.finished_at()
            if plan.once and not stop_requested and plan.open_shards and since is not None:
                if time.monotonic() >= next_shard_check:
                    next_shard_check = time.monotonic() + 5
                    try:
                        open_shards = plan.open_shards()  # resharding may add shards while we run
                    except Exception as error:
                        say(f"listing shards failed ({type(error).__name__}); trying again")
                if caught_up(statuses, open_shards, since):
                    say("every shard is caught up (once=true): stopping")
                    stop_requested.append("once")
                    stop_requested_at.append(time.time())
                    daemon.request_stop()
            if not stop_requested and any(status.failed for status in statuses.values()):
                # A processor gave up on the database (past retry-timeout) and exited without checkpoint; the KCL
                # would wait minutes for it before shutting down. Stop now: a restart delivers those records again.
                say("a processor stopped: the database kept failing past retry-timeout; stopping the worker")
                stop_requested.append("failure")
                daemon.request_stop()
            if plan.hand_back is not None and stop_requested_at:
                # Again every few seconds while the JVM shuts down: the leader may have handed a lease back to us
                # in the moment between its reading of our metrics entry and our release.
                if next_hand_back is None and processors_done(statuses, stop_requested_at[0]):
                    next_hand_back = time.monotonic()
                if next_hand_back is not None and time.monotonic() >= next_hand_back:
                    next_hand_back = time.monotonic() + HAND_BACK_INTERVAL
                    plan.hand_back()
            if stop_requested and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_TIMEOUT
                if companion is not None:
                    companion.stop()  # at once: the KCL's graceful stop may take a while
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                say(f"the KCL did not stop within {STOP_TIMEOUT:.0f} s: killing it")
                daemon.kill()
                killed = True
        code = daemon.poll()
    finally:
        if companion is not None:
            companion.stop()
        if daemon.poll() is None:
            _stop_within(daemon, STOP_TIMEOUT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    statuses = read_statuses(state_dir)
    progress.report(statuses, final=True)
    if companion_failed:
        return 1
    failed = sorted({status.shard_id for status in statuses.values() if status.failed})
    if failed:
        say(
            f"writing to the database failed on {', '.join(failed)}: stopped without checkpoint there; "
            "a restart delivers those records again"
        )
        return 1
    if stop_requested and not killed:
        confirmed = sum(status.stopped for status in statuses.values())
        say(f"stopped ({stop_requested[0]}): processors flushed and checkpointed ({confirmed} at shutdown)")
        return 0
    if killed:
        say("stopped by force: records since the last checkpoint will be delivered again (writes are idempotent)")
        return 1
    say(f"the KCL MultiLangDaemon exited on its own with code {code}; last lines of {daemon.log_path}:")
    print(daemon.tail(), file=sys.stderr)
    return 1


def _stop_within(daemon: Daemon, timeout: float) -> None:
    daemon.request_stop()
    deadline = time.monotonic() + timeout
    while daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    daemon.kill()
