"""When a printed rate means something: over enough records and enough time, else none is printed.

170 records applied in one flush once read "27030 records/s": a figure of one flush's timing, not of the relay.
"""

from __future__ import annotations

__all__ = ["MIN_RATE_RECORDS", "MIN_RATE_SECONDS", "rate"]

MIN_RATE_RECORDS = 1000
MIN_RATE_SECONDS = 1.0


def rate(count: int, seconds: float) -> float | None:
    """count / seconds, or None when there are too few of either to speak of a rate."""
    if count < MIN_RATE_RECORDS or seconds < MIN_RATE_SECONDS:
        return None
    return count / seconds
