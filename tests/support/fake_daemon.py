"""A stand-in for the supervisor's Daemon (kcl_relay.kcl.daemon): no JVM, signals delivered inside poll()."""

from __future__ import annotations

import signal
from pathlib import Path


class ScriptedDaemon:
    """A JVM stand-in whose poll() gets the signals of `signals`, the handler running inside poll() (as it may inside
    Popen.poll(), holding its lock); it notes each call, and whether it came while poll() ran."""

    def __init__(self, signals: list[signal.Signals], exits_on_sigterm: bool = True) -> None:
        self.signals = signals
        self.exits_on_sigterm = exits_on_sigterm
        self.calls: list[str] = []
        self.code: int | None = None
        self.in_poll = False
        self.log_path = Path("kcl.log")

    def _note(self, call: str) -> None:
        self.calls.append(f"{call} inside poll" if self.in_poll else call)

    def start(self) -> None:
        self._note("start")

    def poll(self) -> int | None:
        self.in_poll = True
        try:
            while self.signals:
                signal.raise_signal(self.signals.pop(0))  # the handler runs before this returns
            return self.code
        finally:
            self.in_poll = False

    def request_stop(self) -> None:
        self._note("request_stop")
        if self.exits_on_sigterm:
            self.code = 0  # stopped gracefully (the real JVM: some seconds later)

    def force_stop(self) -> None:
        self._note("force_stop")
        self.code = -signal.SIGKILL

    def kill(self) -> None:  # waits for the JVM: never inside poll()
        self._note("kill")
        self.code = -signal.SIGKILL

    def tail(self) -> str:
        return ""

    def told(self) -> list[str]:
        return []
