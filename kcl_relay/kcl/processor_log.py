"""What the processors' log says about a failure: its cause in one line, for the supervisor's stderr.

A processor that gives up on the database logs the exception with its traceback (kcl_relay.kcl.processor) and
exits; only the supervisor's stderr reaches the user (a terminal, the journal), so it names the cause from there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kcl_relay.masking import mask_secrets

PROCESSOR_LOG = "processor.log"
TAIL_BYTES = 256 * 1024  # the failure is among the last records written: a traceback is a few KB
MAX_CAUSE = 300
# A record's first line (kcl_relay.logs.configure_file_logging): "2026-01-02 03:04:05,678 PID LEVEL name: message".
_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ (?P<level>[A-Z]+) \S+: ")
_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")


def failure_cause(state_dir: Path, shard_id: str) -> str | None:
    """The exception that stopped `shard_id`'s processor, `module.Class: first line`, secrets masked: that of the
    last error about the shard logged with a traceback ("shard S: writing to the database failed; ...")."""
    marker = f"shard {shard_id}: "
    lines = _tail(state_dir / PROCESSOR_LOG)
    for n in reversed(range(len(lines))):
        record = _RECORD.match(lines[n])
        if record and record["level"] in ("ERROR", "CRITICAL") and marker in lines[n]:
            cause = _exception_line(_following(lines, n + 1))
            if cause:
                return mask_secrets(cause)[:MAX_CAUSE]
    return None


def _following(lines: list[str], start: int) -> list[str]:
    """The lines of one record after its first: up to the next record."""
    block = []
    for line in lines[start:]:
        if _RECORD.match(line):
            break
        block.append(line)
    return block


def _exception_line(traceback: list[str]) -> str | None:
    """The first line of the last exception of a logged traceback: the line after its last frame."""
    cause, in_frames = None, False
    for line in traceback:
        if line.startswith(("Traceback ", " ", "\t")):
            in_frames = True
        elif line.strip() and not line.startswith(_CHAIN) and in_frames:
            cause, in_frames = line.strip(), False
    return cause


def _tail(path: Path) -> list[str]:
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            data = file.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()
