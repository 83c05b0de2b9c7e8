"""A stop flag that a signal handler may set.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread is inside
threading.Event.set() or wait() holding the Event's (non-reentrant) lock: an Event.set() in the handler then never
returns. StopFlag.set() only assigns an attribute, and wait() polls it, so a handler can never block on it.
"""

from __future__ import annotations

import threading
import time

__all__ = ["StopFlag", "Stoppable"]

POLL_SECONDS = 0.05  # how soon a waiter notices the flag


class StopFlag:
    """The part of threading.Event's interface that stop signals need: set, is_set, wait."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True  # a single store: atomic, lock-free, safe in a signal handler and across threads

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self._set


Stoppable = threading.Event | StopFlag  # what the loops that watch for a stop accept
