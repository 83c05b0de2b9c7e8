"""A stable default worker id: the host name and the lowest slot number no other worker on this host holds.

A restarted worker gets its old id back, so the KCL hands it its own leases at once (the 4.4 s restart instead of
6.4 s, benchmarks/results/kcl_speed.md); two workers of one application on one host still differ. A slot is held
by a non-blocking flock on `worker-slot-N.lock` in the application's state folder for as long as this process
lives: the kernel drops it when the process ends, however it ends, so a crashed worker's slot is free again.
"""

from __future__ import annotations

import fcntl
import socket
from pathlib import Path
from typing import IO

MAX_SLOTS = 256
_held: list[IO[str]] = []  # the locked files: open for the life of the process


def take_slot(folder: Path, max_slots: int = MAX_SLOTS) -> int | None:
    """Lock the lowest free slot in `folder`; None when none can be locked (no such folder, not writable, all held)."""
    for slot in range(max_slots):
        try:
            handle = open(folder / f"worker-slot-{slot}.lock", "a")  # noqa: SIM115 - held until the process ends
        except OSError:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        except OSError:  # a file system without flock
            handle.close()
            return None
        _held.append(handle)
        return slot
    return None


def stable_worker_id(folder: Path, host: str | None = None) -> str | None:
    """`HOST-SLOT`, or None when no slot can be taken (the caller then draws a random id)."""
    slot = take_slot(folder)
    return None if slot is None else f"{host or socket.gethostname()}-{slot}"
