"""SIGINT/SIGTERM during a worker run: the first stops gracefully, a second one kills; the handler never waits.

A Python signal handler runs between two bytecodes of the main thread, possibly inside Popen.poll() or wait()
with their lock held; a wait of the handler's then never returned (the second Ctrl-C hung kcl-relay).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kcl_relay.kcl.supervisor as supervisor
from kcl_relay.kcl import daemon
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.daemon import Daemon, spawn
from kcl_relay.kcl.supervisor import StopRequest, WorkerPlan
from tests.support.fake_daemon import ScriptedDaemon


def run(daemon: ScriptedDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 0.01)
    processor = ProcessorConfig(target_url="sqlite:///x.db", table="t", state_dir=str(tmp_path))
    properties = {"applicationName": "app", "streamName": "s", "workerId": "w"}
    plan = WorkerPlan("java", Path("jars"), properties, processor, {})
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code = supervisor._supervise(plan, daemon, tmp_path)  # type: ignore[arg-type]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before, "handlers restored"
    return code


def test_a_second_ctrl_c_kills_without_waiting_inside_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jvm = ScriptedDaemon([signal.SIGINT, signal.SIGINT], exits_on_sigterm=False)
    assert run(jvm, tmp_path, monkeypatch) == 1
    assert jvm.calls[:3] == ["start", "request_stop inside poll", "force_stop inside poll"]
    assert "kill inside poll" not in jvm.calls, "Popen.wait() inside the signal handler: the hang"
    err = capsys.readouterr().err
    assert "another signal during the stop: killed the KCL" in err
    assert err.strip().splitlines()[-1].startswith("kcl-relay: stopped by force: ")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_stops_gracefully(
    signum: signal.Signals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jvm = ScriptedDaemon([signum])
    assert run(jvm, tmp_path, monkeypatch) == 0
    assert jvm.calls == ["start", "request_stop inside poll"]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"kcl-relay: stopped ({signum.name}): processors flushed and checkpointed")


# ---- the real Daemon, under a handler, while the main loop is inside poll() ------------------------------------


class HeldPopen:
    """A child's real Popen as a main loop inside poll() or wait() holds it: every poll or wait blocks until
    released (their lock is taken); pid and returncode are the child's."""

    def __init__(self, real: subprocess.Popen[bytes]) -> None:
        self.real = real
        self.pid = real.pid
        self.released = threading.Event()
        self.calls: list[str] = []

    @property
    def returncode(self) -> int | None:
        return self.real.returncode

    def poll(self) -> int | None:
        self.calls.append("poll")
        self.released.wait()
        return self.real.poll()

    def wait(self, timeout: float | None = None) -> int:
        self.calls.append("wait")
        self.released.wait()
        return self.real.wait(timeout)


STAND_IN = """
import signal, sys
from pathlib import Path
marker = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda signum, frame: marker.write_text("SIGTERM"))  # a JVM still shutting down
Path(f"{marker}.ready").touch()
while True:
    signal.pause()
"""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)


def test_the_handler_signals_the_real_daemon_without_a_wait_or_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "java_major", lambda java: 17)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    jars = tmp_path / "jars"
    jars.mkdir()
    jvm = Daemon("/usr/bin/java", jars, tmp_path / "kcl.properties", tmp_path / "kcl.log", {})
    marker = tmp_path / "jvm"
    real = spawn([sys.executable, "-c", STAND_IN, str(marker)], dict(os.environ), tmp_path / "out.log")
    held = HeldPopen(real)
    jvm.process = held  # type: ignore[assignment]
    stop = StopRequest(jvm)
    try:
        wait_until(Path(f"{marker}.ready").exists, "the stand-in's SIGTERM handler")
        for signals, what in ((1, "SIGTERM"), (2, "SIGKILL")):
            handler = threading.Thread(target=stop.on_signal, args=(signal.SIGINT, None), daemon=True)
            handler.start()
            handler.join(timeout=30)
            assert not handler.is_alive(), f"the handler's {what} blocked on the held Popen"
            if signals == 1:
                wait_until(marker.exists, "the stand-in's SIGTERM")  # the graceful stop came first
        assert held.calls == [], "no poll, no wait: the main loop reaps"
        assert stop.reason == "SIGINT" and stop.forced
    finally:
        held.released.set()
        if real.poll() is None:
            os.killpg(real.pid, signal.SIGKILL)
    assert real.wait(timeout=30) == -signal.SIGKILL
    assert marker.read_text() == "SIGTERM"


class EarlySignal(ScriptedDaemon):
    """A signal while the JVM is being started: its SIGTERM, sent before there was a process, went nowhere."""

    def start(self) -> None:
        signal.raise_signal(signal.SIGTERM)
        self._note("start")

    def request_stop(self) -> None:
        if "start" in self.calls:
            super().request_stop()
        else:
            self._note("request_stop before start")


def test_a_signal_while_the_jvm_starts_still_reaches_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jvm = EarlySignal([])
    assert run(jvm, tmp_path, monkeypatch) == 0
    assert jvm.calls == ["request_stop before start", "start", "request_stop"]
