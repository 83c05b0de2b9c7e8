"""The JVM command line: capped heap, C1, user options last; the class data sharing archive's life cycle; the JVM's
process: started without Python code between fork and exec, stopped when kcl-relay dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.kcl import daemon
from kcl_relay.kcl.daemon import CDS_ENV, DAEMON_CLASS, JVM_OPTIONS_ENV, ClassDataArchive, Daemon, jvm_command, launched

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def jars(tmp_path: Path) -> Path:
    folder = tmp_path / "jars"
    folder.mkdir()
    (folder / "amazon-kinesis-client-multilang-3.1.3.jar").write_bytes(b"x" * 10)
    return folder


@pytest.fixture
def java17(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(daemon, "java_major", lambda java: 17)
    monkeypatch.delenv(CDS_ENV, raising=False)
    monkeypatch.delenv(JVM_OPTIONS_ENV, raising=False)
    return "/usr/bin/java"


def test_command_line(java17: str, jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JVM_OPTIONS_ENV, "-Xmx2g -XX:TieredStopAtLevel=4")
    command = jvm_command(java17, jars, tmp_path / "kcl.properties")
    assert command[0] == java17
    assert command[-3:] == [DAEMON_CLASS, "--properties-file", str(tmp_path / "kcl.properties")]
    assert "-Daws.cborEnabled=false" in command
    # The defaults come first, the user's options after them: for the JVM the last -Xmx / -XX wins.
    assert command.index("-Xmx512m") < command.index("-Xmx2g")
    assert command.index("-XX:TieredStopAtLevel=1") < command.index("-XX:TieredStopAtLevel=4")


def test_java_17_writes_an_archive_once_then_maps_it(java17: str, jars: Path, tmp_path: Path) -> None:
    archive = ClassDataArchive(java17, jars, folder=tmp_path / "cache")
    (option,) = archive.options()
    assert option.startswith("-XX:ArchiveClassesAtExit=") and option.endswith(f".{os.getpid()}.tmp")
    assert archive.pending is not None
    archive.pending.write_bytes(b"archive")  # what the JVM writes when it exits
    archive.finish()
    assert archive.path.read_bytes() == b"archive"
    assert ClassDataArchive(java17, jars, folder=tmp_path / "cache").options() == [
        f"-XX:SharedArchiveFile={archive.path}"
    ]


def test_a_run_that_wrote_no_archive_leaves_nothing_behind(java17: str, jars: Path, tmp_path: Path) -> None:
    archive = ClassDataArchive(java17, jars, folder=tmp_path / "cache")
    archive.options()
    archive.finish()  # killed: the JVM wrote nothing
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_archive_belongs_to_one_java_and_jar_set(java17: str, jars: Path, tmp_path: Path) -> None:
    first = ClassDataArchive(java17, jars, folder=tmp_path)
    (jars / "amazon-kinesis-client-3.1.3.jar").write_bytes(b"y")
    assert ClassDataArchive(java17, jars, folder=tmp_path).path != first.path
    assert ClassDataArchive("/opt/other/java", jars, folder=tmp_path).path != first.path


def test_java_19_and_later_keep_the_archive_themselves(
    jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "java_major", lambda java: 21)
    monkeypatch.delenv(CDS_ENV, raising=False)
    archive = ClassDataArchive("/usr/bin/java", jars, folder=tmp_path)
    assert archive.options() == ["-XX:+AutoCreateSharedArchive", f"-XX:SharedArchiveFile={archive.path}"]


def test_switched_off_or_nowhere_to_write(
    java17: str, jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CDS_ENV, "off")
    assert ClassDataArchive(java17, jars, folder=tmp_path).options() == []
    monkeypatch.delenv(CDS_ENV)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert ClassDataArchive(java17, jars, folder=blocked / "cache").options() == []


# ---- the JVM's process: started without Python code between fork and exec, stopped with kcl-relay --------------

# A stand-in for the JVM: says when its SIGTERM handler is in place, and notes the SIGTERM it gets (then exits, as
# the JVM's shutdown does; or, with "stay", keeps running, as a JVM still shutting down does).
STAND_IN = """
import os, signal, sys
from pathlib import Path
marker = Path(sys.argv[1])
def on_term(signum, frame):
    marker.write_text("SIGTERM")
    if sys.argv[2] != "stay":
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
Path(f"{marker}.pid").write_text(str(os.getpid()))
while True:
    signal.pause()
"""


def stand_in(marker: Path, stay: bool = False) -> list[str]:
    return [sys.executable, "-c", STAND_IN, str(marker), "stay" if stay else "exit"]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper this test does not control)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_the_jvm_starts_without_python_code_between_fork_and_exec(
    java17: str, jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preexec_fn runs Python in the forked child, where a lock some thread held at the fork (the metrics server
    runs by then) is held forever: no preexec_fn, its own session, PR_SET_PDEATHSIG by the exec'd launcher."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen: dict[str, Any] = {}

    class Recorder:
        pid = 4242

        def __init__(self, args: list[str], **kwargs: Any) -> None:
            seen.update(kwargs, args=args)

    monkeypatch.setattr(daemon.subprocess, "Popen", Recorder)
    jvm = Daemon(java17, jars, tmp_path / "kcl.properties", tmp_path / "kcl.log", {"A": "b"})
    jvm.start()
    assert seen.get("preexec_fn") is None
    assert seen["start_new_session"] is True and seen["env"] == {"A": "b"}
    assert seen["args"] == launched(jvm.command)
    if sys.platform.startswith("linux"):
        assert seen["args"][:4] == [sys.executable, "-I", "-S", "-c"] and seen["args"][5] == str(os.getpid())
        assert seen["args"][-len(jvm.command) :] == jvm.command


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    """The intent of PR_SET_PDEATHSIG, for real: a parent with a thread running starts the child, then dies by
    SIGKILL; the child gets SIGTERM (the JVM's graceful stop) instead of going on headless."""
    marker = tmp_path / "child"
    parent_code = f"""
import os, sys, threading, time
from pathlib import Path
from kcl_relay.kcl.daemon import spawn
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()  # as the metrics server runs by then
spawn({stand_in(marker)!r}, dict(os.environ), Path({str(tmp_path / "out.log")!r}))
time.sleep(600)
"""
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env={**os.environ, "PYTHONPATH": REPO})
    child = 0
    try:
        child = int(wait_until(lambda: Path(f"{marker}.pid").exists() and Path(f"{marker}.pid").read_text(), "child"))
        assert running(child)
        parent.kill()
        parent.wait(timeout=30)
        wait_until(lambda: marker.exists() and marker.read_text() == "SIGTERM", "the child's SIGTERM")
        wait_until(lambda: not running(child), "the child to exit")
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if child and running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher is Linux's")
def test_the_launcher_starts_nothing_once_its_parent_is_gone(tmp_path: Path) -> None:
    """kcl-relay died between fork and the launcher's prctl: the death signal would never come, so no JVM."""
    made = tmp_path / "made"
    command = [sys.executable, "-c", f"open({str(made)!r}, 'w').close()"]
    not_its_parent = os.getppid()  # the launcher's parent is this process
    assert subprocess.run(launched(command, parent=not_its_parent), timeout=60).returncode == 128 + signal.SIGTERM
    assert not made.exists()
    assert subprocess.run(launched(command), timeout=60).returncode == 0
    assert made.exists()
