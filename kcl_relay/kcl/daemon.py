"""Find Java and the KCL jars, and run the KCL (kcl-relay's launcher, or the stock MultiLangDaemon) as a child."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from kcl_relay.logs import logback_xml
from kcl_relay.options import default

MIN_JAVA = 17
DAEMON_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"  # the stock one (KCL_RELAY_DAEMON=multilang)
LAUNCHER_CLASS = "kclrelay.launcher.Launcher"  # kcl-relay's (kcl_relay/java, built by kcl_relay.kcl.launcher)
LAUNCHER_TELLS = "kcl-relay: "  # the launcher's lines for the user (on the JVM's stderr), repeated by the supervisor
LAUNCHER_EXIT_VERSION = 3  # the launcher refused the KCL version it found (its one line says which)
JVM_OPTIONS = [
    # moto rejects the SDK's default CBOR encoding of Kinesis calls; JSON works with AWS and every emulator.
    "-Daws.cborEnabled=false",
    "-Xms64m",
    # A cap instead of the JVM's default of a quarter of the machine's memory. Per shard the KCL holds at most 3
    # GetRecords results and 8 MB of record data in its prefetch queue (SimpleRecordsFetcherFactory); see
    # docs/options.md for what this was measured at and how to raise it (KCL_RELAY_JVM_OPTIONS=-Xmx2g).
    "-Xmx512m",
    # The C1 compiler alone: the daemon starts about a second sooner, and drained a backlog as fast (docs/options.md).
    "-XX:TieredStopAtLevel=1",
]
JVM_OPTIONS_ENV = "KCL_RELAY_JVM_OPTIONS"  # appended: a later -Xmx or -XX option wins
CDS_ENV = "KCL_RELAY_CDS"  # "off": no class data sharing archive


class SetupError(RuntimeError):
    """Java or the jars are missing: reported as one line naming the fix, exit code 2, nothing started."""


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise SetupError(
            f"Java {MIN_JAVA}+ not found: install it (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
        )
    major = java_major(java)
    if major < MIN_JAVA:
        raise SetupError(
            f"{java} is Java {major or 'unknown'}; the KCL needs Java {MIN_JAVA}+: "
            "install openjdk-17-jre-headless or set JAVA_HOME"
        )
    return java


@functools.lru_cache(maxsize=4)
def java_major(java: str) -> int:
    """The major version `java -version` reports (0 when it says none)."""
    try:
        banner = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError) as error:
        raise SetupError(f"cannot run {java}: {error}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    return major


def find_jars() -> Path:
    """The KCL jars' folder (kcl_relay.kcl.jars: KCL_RELAY_JARS, amazon-kclpy's, the cache; setup-kcl fills it)."""
    from kcl_relay.kcl import jars

    folder = jars.jar_dir()
    if folder is None:
        raise SetupError(f"KCL jars not found: {jars.SETUP_HINT}")
    return folder


def cache_dir() -> Path:
    """kcl-relay's folder in the user's cache (systemd's CacheDirectory= through XDG_CACHE_HOME)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kcl-relay"


class ClassDataArchive:
    """A class data sharing archive of the KCL's classes: the JVM maps them instead of loading them, ~1 s sooner.

    One per Java and jar set, in the user's cache folder. Java 19+ keeps it up to date itself
    (-XX:+AutoCreateSharedArchive); Java 17 writes it when a run without one exits (-XX:ArchiveClassesAtExit) to a
    file of its own, which `finish` moves into place, so workers starting together never share a half-written one.
    """

    def __init__(self, java: str, jars: Path, folder: Path | None = None, launcher: Path | None = None) -> None:
        self.java = java
        self.folder = folder or cache_dir()
        listing = sorted(f"{jar.name}:{jar.stat().st_size}" for jar in jars.glob("*.jar"))
        # The archive is valid for one class path only: the launcher's build folder (named by its sources) is in it.
        identity = "\n".join([os.path.realpath(java), str(java_major(java)), str(launcher or ""), *listing])
        self.path = self.folder / f"kcl-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsa"
        self.pending: Path | None = None

    def options(self) -> list[str]:
        if os.environ.get(CDS_ENV) == "off":
            return []
        if not self._writable_folder():
            return [f"-XX:SharedArchiveFile={self.path}"] if self.path.is_file() else []
        if java_major(self.java) >= 19:
            return ["-XX:+AutoCreateSharedArchive", f"-XX:SharedArchiveFile={self.path}"]
        if self.path.is_file():
            return [f"-XX:SharedArchiveFile={self.path}"]
        self.pending = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp")
        return [f"-XX:ArchiveClassesAtExit={self.pending}"]

    def finish(self) -> None:
        """After the JVM exited: move a freshly written archive into place (an unfinished one is dropped)."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        try:
            if pending.is_file() and pending.stat().st_size > 0:
                os.replace(pending, self.path)
            pending.unlink(missing_ok=True)
        except OSError:
            pass  # only a speed-up: the next run tries again

    def _writable_folder(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.folder, os.W_OK)


def jvm_command(
    java: str,
    jars: Path,
    properties: Path,
    archive: ClassDataArchive | None = None,
    logback: Path | None = None,
    launcher: Path | None = None,
    settings: dict[str, str] | None = None,
    main_class: str | None = None,
    extra_classpath: tuple[Path, ...] = (),
) -> list[str]:
    """The JVM's command: kcl-relay's launcher (its jar first on the class path) or, without one, the stock
    MultiLangDaemon; both read the same properties file. `settings`: the launcher's own (-Dkclrelay.NAME=VALUE).
    `main_class` and `extra_classpath`: another entry point of the launcher and the jars it needs (the DynamoDB
    Streams one and its adapter)."""
    extra = [f"-Dkclrelay.{name}={value}" for name, value in (settings or {}).items()] if launcher else []
    extra += os.environ.get(JVM_OPTIONS_ENV, "").split()
    sharing = archive.options() if archive else []
    logging = [f"-Dlogback.configurationFile={logback}"] if logback else []
    main = main_class or (LAUNCHER_CLASS if launcher else DAEMON_CLASS)
    classpath = os.pathsep.join([*([str(launcher)] if launcher else []), *map(str, extra_classpath), f"{jars}/*"])
    daemon = [main, "--properties-file", str(properties)]
    return [java, *JVM_OPTIONS, *sharing, *logging, *extra, "-cp", classpath, *daemon]


# The JVM stops when kcl-relay dies, even by SIGKILL: its own session keeps terminal signals away from it, so without
# this a `kill -9` of kcl-relay left a headless worker holding its leases; with it the JVM gets SIGTERM and stops
# gracefully (processors flush and checkpoint), and its leases expire.
#
# How: PR_SET_PDEATHSIG, set in the child before it becomes the JVM, by a shim: a fresh interpreter exec'd by
# the child, which sets it, checks that kcl-relay is still its parent (it may have died before), then execs java.
# Not preexec_fn: Python code between fork and exec can deadlock once threads run (the metrics server, the full
# load's scan), on any lock a thread held at the fork. Not `setpriv --pdeathsig`: not on every Linux (busybox has
# none), and it cannot see a parent that died before the call. A fresh interpreter has no threads, and costs
# milliseconds beside the JVM's second. The death signal comes when the thread that forked exits: the main thread,
# in the supervisor.
_DEATH_SIGNAL_SHIM = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (linux/prctl.h)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(128 + signal.SIGTERM)  # kcl-relay died before the call: no JVM without it
os.execvp(sys.argv[2], sys.argv[2:])
"""


def launched(command: list[str], parent: int | None = None) -> list[str]:
    """`command` started through the shim that ties its life to `parent`, this process (Linux; elsewhere as it
    is); started by another process, the shim exits instead."""
    if not sys.platform.startswith("linux") or not sys.executable:
        return command
    return [sys.executable, "-I", "-S", "-c", _DEATH_SIGNAL_SHIM, str(parent or os.getpid()), *command]


def spawn(command: list[str], env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    """Start `command` in its own session, stdout and stderr appended to `output`, stopped when we die (launched)."""
    with open(output, "ab") as log_file:  # the child keeps its own copy
        return subprocess.Popen(
            launched(command),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


class Daemon:
    """One KCL JVM in its own session: terminal signals reach kcl-relay only, which stops it gracefully.

    `launcher`: kcl-relay's launcher's class folder (kcl_relay.kcl.launcher.ensure_built); None runs the stock
    MultiLangDaemon.
    """

    def __init__(
        self,
        java: str,
        jars: Path,
        properties: Path,
        log_path: Path,
        env: dict[str, str],
        log_level: str = default("log-level"),
        launcher: Path | None = None,
        settings: dict[str, str] | None = None,
        main_class: str | None = None,
        extra_classpath: tuple[Path, ...] = (),
    ) -> None:
        self.archive = ClassDataArchive(java, jars, launcher=launcher)
        # The KCL's log: logback writes and rotates it (kcl_relay.logs); the JVM's own stdout and stderr (a crash,
        # a warning of the JVM itself) go to a file beside it.
        logback = log_path.with_name("logback.xml")
        logback.write_text(logback_xml(log_path, log_level))
        self.command = jvm_command(
            java, jars, properties, self.archive, logback, launcher, settings, main_class, extra_classpath
        )
        self.name = "kcl-relay's launcher" if launcher else "MultiLangDaemon"
        self.log_path = log_path
        self.output_path = log_path.with_name(f"{log_path.stem}.stdout.log")
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn(self.command, self.env, self.output_path)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        code = self.process.poll() if self.process else None
        if code is not None:
            self.archive.finish()
        return code

    # request_stop and force_stop only send a signal: they never wait, nor reap (Popen.poll), so a signal handler
    # may call them, even one that runs while the main loop is inside Popen.poll() or wait() with their lock held.
    # Until the main loop reaps the JVM its pid stays its own (a zombie at worst), never another process's (but for
    # the instant inside poll() between the reaping and returncode: far too short for the kernel to reuse the pid).

    def request_stop(self) -> None:
        """SIGTERM: the JVM's shutdown hook asks every processor to flush and checkpoint (shutdownGraceMillis)."""
        self._send(signal.SIGTERM, group=False)

    def force_stop(self) -> None:
        """SIGKILL to the JVM's whole session (the processors too); poll() or kill() reaps it."""
        self._send(signal.SIGKILL, group=True)

    def kill(self) -> None:
        """force_stop, then wait for the JVM: for the main loop, never for a signal handler."""
        if self.process and self.process.returncode is None:
            self.force_stop()
            self.process.wait()
            self.archive.finish()

    def _send(self, signum: signal.Signals, group: bool) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # a group without members left
            (os.killpg if group else os.kill)(self.process.pid, signum)

    def told(self) -> list[str]:
        """What the launcher said for the user (`kcl-relay: ...` lines of the JVM's own output)."""
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.startswith(LAUNCHER_TELLS)]

    def tail(self, lines: int = 20) -> str:
        """The last lines of the KCL's log, and of the JVM's own output when it wrote any."""
        parts = []
        for path in (self.log_path, self.output_path):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)
