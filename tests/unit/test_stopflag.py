"""StopFlag: settable from a signal handler that interrupted a thread waiting on it."""

from __future__ import annotations

import os
import signal
import threading
import time

from kcl_relay.stopflag import StopFlag


def test_set_is_seen_by_waiters_and_wait_times_out() -> None:
    flag = StopFlag()
    started = time.monotonic()
    assert flag.wait(0.1) is False
    assert time.monotonic() - started >= 0.1
    threading.Timer(0.05, flag.set).start()
    assert flag.wait(10) is True
    assert flag.is_set()


def test_a_signal_handler_sets_it_while_the_main_thread_waits_on_it() -> None:
    # With a threading.Event the handler's set() may need the lock the interrupted wait() holds; here the wait must
    # end soon after the signal, well before its timeout.
    flag = StopFlag()
    previous = signal.signal(signal.SIGUSR1, lambda *_: flag.set())
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert flag.wait(30) is True
        assert time.monotonic() - started < 20
    finally:
        signal.signal(signal.SIGUSR1, previous)
