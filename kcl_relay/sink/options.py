"""The sink's options from the relay's settings: the source URL's, or the processor's copy of them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from kcl_relay.sink.retry import RetryPolicy


class SinkSettings(Protocol):
    tombstone_retention: float  # seconds
    retry_timeout: float  # seconds
    # delete_mode: "hard" or "soft" where the settings say (a redrive's need not: then the target table's own)


def sink_options(settings: SinkSettings) -> dict[str, Any]:
    """Keyword arguments for open_sink()."""
    return {
        "tombstone_retention": timedelta(seconds=settings.tombstone_retention),
        "retry": RetryPolicy(timeout=settings.retry_timeout),
        "delete_mode": getattr(settings, "delete_mode", None),
    }
