"""Run one KCL worker: start the KCL's JVM, report progress, stop gracefully on a signal or once caught up."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kcl_relay import rates
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.daemon import LAUNCHER_EXIT_VERSION, Daemon, SetupError
from kcl_relay.kcl.processor_log import PROCESSOR_LOG, failure_cause
from kcl_relay.kcl.properties import SHUTDOWN_GRACE_MILLIS, write_properties
from kcl_relay.kcl.status import ShardStatus, StatusReader, latest_by_shard
from kcl_relay.masking import mask_env, masked_eq, masked_repr
from kcl_relay.options import default

if TYPE_CHECKING:
    from kcl_relay.kcl.metrics import MetricsServer

PROGRESS_INTERVAL = 5.0  # at most one progress line this often while records flow
HEARTBEAT_INTERVAL = 60.0  # one while nothing changes
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


@masked_eq  # an assertion diff of two plans never shows the AWS secret (kcl_relay.masking)
@dataclass(eq=False)
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
    metrics_host: str = default("metrics-host")
    metrics_port: int | None = None  # serve Prometheus metrics from the status files on this port
    lasting_worker_id: bool = True  # False: a random id no later run carries
    # Hands this worker's leases back (conditional on the owner); called during a graceful stop once every
    # processor has flushed and checkpointed, as KCL 3.1.3's own shutdown keeps the JVM (and its leases) for up to
    # failoverTimeMillis after that. For the stock MultiLangDaemon only: the launcher does it in the JVM.
    hand_back: Callable[[], None] | None = None
    launcher: Path | None = None  # kcl-relay's launcher's classes (kcl_relay.kcl.launcher); None: the MultiLangDaemon
    launcher_main: str | None = None  # another entry point of the launcher (DynamoDB Streams), with its jars:
    launcher_classpath: tuple[Path, ...] = ()

    def __repr__(self) -> str:
        return masked_repr(self, aws_env=repr(mask_env(self.aws_env)))


KEEP_STATE_DIRS = 10  # per application: the logs of the last runs
STATE_DIR_ENV = ("KCL_RELAY_STATE_DIR", "STATE_DIRECTORY")  # ours, or systemd's StateDirectory=
RUN_PREFIX = "run-"
MAX_APPLICATION_DIR = 200  # file names end at 255 bytes; application names may be 255 characters


def application_dir(application_name: str) -> Path:
    """The application's own folder: its workers' slot locks and one folder per run.

    One folder per application name, exactly (a long name keeps a hash of the whole name): pruning the runs of
    `orders` never touches those of `orders-eu`.
    """
    base = next((os.environ[name] for name in STATE_DIR_ENV if os.environ.get(name)), None) or tempfile.gettempdir()
    name = application_name
    if len(name) > MAX_APPLICATION_DIR:
        name = f"{name[: MAX_APPLICATION_DIR - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    folder = Path(base) / f"kcl-relay-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):  # another user's, in a shared temp dir: one of this user's own
        folder = folder.with_name(f"{folder.name}-uid{os.getuid()}")
        folder.mkdir(exist_ok=True)
    return folder


def make_state_dir(application_name: str) -> Path:
    """A fresh folder per worker run for its properties file, logs and shard status (two workers never share one)."""
    parent = application_dir(application_name)
    folder = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=parent))
    _prune(parent, keep=KEEP_STATE_DIRS)
    return folder


def _prune(parent: Path, keep: int) -> None:
    """Restarts (systemd's Restart=on-failure) must not pile up folders: keep the newest runs of this application."""
    folders = sorted((p for p in parent.glob(f"{RUN_PREFIX}*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class Progress:
    """Progress lines on stderr (a journal for months): when something changed, else a heartbeat while idle.

    A line at most every PROGRESS_INTERVAL while records flow; while nothing changes, one every HEARTBEAT; "waiting
    for shard leases" once. Records read and rows applied differ: a batch keeps one change per item key (the newest),
    and a change older than the row is not applied.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.last_report = self.started
        self.last_read = 0  # records read at the last progress line
        self.last_counts: tuple[int, ...] | None = None  # what the last progress line said
        self.said_waiting = False
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
            if not self.said_waiting:
                self.said_waiting = True
                say("waiting for shard leases (a fresh lease table costs the KCL up to a minute)")
            return
        current = latest_by_shard(statuses).values()
        records = sum(status.records for status in statuses.values())
        dead = sum(status.dead_letters for status in statuses.values())
        counts = (records, applied, dead, len(current))
        if counts == self.last_counts and now - self.last_report < HEARTBEAT_INTERVAL:
            return
        say(progress_line(records, applied, dead, current, (records - self.last_read) / (now - self.last_report)))
        self.last_report, self.last_read, self.last_counts = now, records, counts

    def _summary(self, statuses: dict[str, ShardStatus], applied: int) -> None:
        records = sum(status.records for status in statuses.values())
        dead = sum(status.dead_letters for status in statuses.values())
        line = f"done: {records} records read, {applied} applied after merging per key, {dead} dead letters"
        firsts = [s.first_applied_at for s in statuses.values() if s.first_applied_at]
        lasts = [s.last_applied_at for s in statuses.values() if s.last_applied_at]
        span = max(lasts) - min(firsts) if firsts and lasts else 0.0  # the processors' own clocks, at each flush
        per_second = rates.rate(records, span)  # none over a handful of records (kcl_relay.rates)
        if per_second is not None:
            line += f"; {per_second:.0f} records/s from the first applied record to the last"
        say(line)


def progress_line(records: int, applied: int, dead: int, current: Iterable[ShardStatus], rate: float) -> str:
    """`215 records read (43/s), 107 applied after merging per key, lag 120 ms, 2 shards, 0 dead letters`."""
    shards = list(current)
    lags = [s.millis_behind for s in shards if s.millis_behind is not None and not s.ended]
    lag = f"{max(lags)} ms" if lags else "unknown"
    return (
        f"{records} records read ({rate:.0f}/s), {applied} applied after merging per key, lag {lag}, "
        f"{len(shards)} shards, {dead} dead letters"
    )


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
    # The launcher hands the leases back itself at a graceful stop; a worker alone keeps them for its restart, unless
    # its id is one no later run carries.
    settings = {"handBack": "auto" if plan.lasting_worker_id else "always"}
    daemon = Daemon(
        plan.java,
        plan.jars,
        properties_path,
        state_dir / "kcl.log",
        env,
        plan.processor.log_level,
        plan.launcher,
        settings,
        plan.launcher_main,
        plan.launcher_classpath,
    )
    metrics = start_metrics(plan, state_dir)
    try:
        return _supervise(plan, daemon, state_dir)
    finally:
        if metrics is not None:
            metrics.close()


def start_metrics(plan: WorkerPlan, state_dir: Path) -> MetricsServer | None:
    """The Prometheus endpoint, before the JVM starts: a port that is taken is bad input, found before anything runs."""
    if plan.metrics_port is None:
        return None
    from kcl_relay.kcl.metrics import MetricsServer, registry_for  # prometheus_client only when asked for

    registry = registry_for(state_dir, plan.properties["applicationName"], plan.properties["streamName"])
    try:
        server = MetricsServer(plan.metrics_host, plan.metrics_port, registry)
    except OSError as error:
        raise SetupError(
            f"cannot serve metrics on {plan.metrics_host}:{plan.metrics_port}: {error.strerror or error}"
        ) from None
    say(f"Prometheus metrics on http://{_host_in_url(plan.metrics_host)}:{server.port}/metrics")
    return server


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class StopRequest:
    """Why and since when the worker is to stop, and the SIGINT/SIGTERM handler that asks for it.

    A Python signal handler runs in the main thread between two bytecodes: possibly while the main loop is inside
    Popen.poll() or wait(), holding their lock, where a Popen.wait() of the handler's never returned. So the handler
    only records and sends signals (Daemon.request_stop, force_stop: os.kill, never a wait); the main loop reaps the
    JVM and says what happened. The first signal stops gracefully, a second one (a second Ctrl-C) kills.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.reason: str | None = None
        self.at: float | None = None  # wall clock, for processors_done; None: no hand-back during the stop
        self.forced = False

    def ask(self, reason: str, hand_back: bool = True) -> None:
        if self.reason is None:
            self.reason = reason
            self.at = time.time() if hand_back else None
        self.daemon.request_stop()

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.reason is not None:  # a second Ctrl-C, or a signal during a stop: stop now
            self.forced = True
            self.daemon.force_stop()
            return
        self.ask(signal.Signals(signum).name)


def _supervise(plan: WorkerPlan, daemon: Daemon, state_dir: Path) -> int:
    stop = StopRequest(daemon)
    next_hand_back: float | None = None  # monotonic; None: not yet (processors still at work)
    previous = {sig: signal.signal(sig, stop.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    say(
        f"worker {plan.properties.get('workerId') or plan.properties.get('workerIdentifier')} of application "
        f"{plan.properties['applicationName']} on stream {plan.properties['streamName']}; "
        f"logs in {state_dir}"
    )
    progress = Progress()
    statuses_of = StatusReader(state_dir, compact=True).read  # folds exited processors' files into totals
    companion = plan.companion
    companion_failed: str | None = None
    daemon.start()
    if stop.reason is not None:  # a signal before the JVM was there to get it
        daemon.request_stop()
    try:
        if companion is not None:
            companion.start()
        open_shards: set[str] = set()
        next_shard_check = 0.0
        stop_deadline: float | None = None
        killed = False
        while daemon.poll() is None:
            time.sleep(POLL_INTERVAL)
            statuses = statuses_of()
            progress.report(statuses)
            since: float | None = 0.0  # caught-up shards count from then on; None: not yet (the companion runs)
            if companion is not None:
                companion_failed = companion_failed or companion.poll()
                if companion_failed and stop.reason is None:
                    say(f"error: {companion_failed}: stopping")
                    stop.ask("failure", hand_back=False)
                since = companion.finished_at()
            if plan.once and stop.reason is None and plan.open_shards and since is not None:
                if time.monotonic() >= next_shard_check:
                    next_shard_check = time.monotonic() + 5
                    try:
                        open_shards = plan.open_shards()  # resharding may add shards while we run
                    except Exception as error:
                        say(f"listing shards failed ({type(error).__name__}); trying again")
                if caught_up(statuses, open_shards, since):
                    say("every shard is caught up (once=true): stopping")
                    stop.ask("once")
            failed_now = sorted({status.shard_id for status in statuses.values() if status.failed})
            if stop.reason is None and failed_now:
                # A processor gave up on the database (an error, or an outage past retry-timeout) and exited without
                # checkpoint; the KCL would wait minutes for it before shutting down. Stop now: a restart delivers
                # those records again.
                say(f"a processor stopped: {failures(state_dir, failed_now)}; stopping the worker")
                stop.ask("failure", hand_back=False)
            if plan.hand_back is not None and stop.at is not None:
                # Again every few seconds while the JVM shuts down: the leader may have handed a lease back to us
                # in the moment between its reading of our metrics entry and our release.
                if next_hand_back is None and processors_done(statuses, stop.at):
                    next_hand_back = time.monotonic()
                if next_hand_back is not None and time.monotonic() >= next_hand_back:
                    next_hand_back = time.monotonic() + HAND_BACK_INTERVAL
                    plan.hand_back()
            if stop.reason is not None and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_TIMEOUT
                if companion is not None:
                    companion.stop()  # at once: the KCL's graceful stop may take a while
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                say(f"the KCL did not stop within {STOP_TIMEOUT:.0f} s: killing it")
                daemon.kill()
                killed = True
        code = daemon.poll()
        if stop.forced:  # the handler sent SIGKILL to the JVM's session; poll() reaped the JVM
            say("another signal during the stop: killed the KCL")
            killed = True
    finally:
        if companion is not None:
            companion.stop()
        if daemon.poll() is None:
            _stop_within(daemon, STOP_TIMEOUT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in daemon.told():  # the launcher's own lines: leases handed back or kept, a refused KCL version
        print(line, file=sys.stderr, flush=True)
    statuses = statuses_of()
    progress.report(statuses, final=True)
    if companion_failed:
        return 1
    failed = sorted({status.shard_id for status in statuses.values() if status.failed})
    if failed:
        say(
            f"{failures(state_dir, failed)}; stopped without checkpoint there: a restart delivers those records "
            f"again (details in {state_dir / PROCESSOR_LOG})"
        )
        return 1
    if stop.reason is not None and not killed:
        confirmed = sum(status.stopped for status in statuses.values())
        say(f"stopped ({stop.reason}): processors flushed and checkpointed ({confirmed} at shutdown)")
        return 0
    if killed:
        say("stopped by force: records since the last checkpoint will be delivered again (writes are idempotent)")
        return 1
    if plan.launcher is not None and code == LAUNCHER_EXIT_VERSION:
        return 2  # bad setup, said in the launcher's line above: a restart cannot fix it
    say(f"the KCL ({daemon.name}) exited on its own with code {code}; last lines of {daemon.log_path}:")
    print(daemon.tail(), file=sys.stderr)
    return 1


def failures(state_dir: Path, shards: list[str]) -> str:
    """`writing to the database failed on SHARD: CAUSE` for each failed shard (its cause from the processor log)."""
    parts = []
    for shard in shards:
        cause = failure_cause(state_dir, shard)
        parts.append(f"{shard}: {cause}" if cause else f"{shard} (the cause is in {PROCESSOR_LOG})")
    return f"writing to the database failed on {'; '.join(parts)}"


def _stop_within(daemon: Daemon, timeout: float) -> None:
    daemon.request_stop()
    deadline = time.monotonic() + timeout
    while daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    daemon.kill()
