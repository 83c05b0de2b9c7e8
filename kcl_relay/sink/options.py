"""The sink's options from the relay's settings: the source URL's, or the processor's copy of them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from kcl_relay.sink.retry import RetryPolicy


class SinkSettings(Protocol):
    # Read-only members: the settings are frozen dataclasses (a plain attribute here would demand a writable one).
    @property
    def tombstone_retention(self) -> float: ...  # seconds
    @property
    def retry_timeout(self) -> float: ...  # seconds

    # delete_mode: "hard" or "soft" where the settings say (a redrive's need not: then the target table's own)


def sink_options(settings: SinkSettings) -> dict[str, Any]:
    """Keyword arguments for open_sink()."""
    return {
        "tombstone_retention": timedelta(seconds=settings.tombstone_retention),
        "retry": RetryPolicy(timeout=settings.retry_timeout),
        "mapping": _mapping(getattr(settings, "mapping", None)),
        "delete_mode": getattr(settings, "delete_mode", None),
    }


def _mapping(path: str | None) -> Any:
    """The mapping file (checked again: a processor reads it on its own), or None: then a table filled with a
    mapping keeps the one stored beside it."""
    if not path:
        return None
    from kcl_relay.mapping.spec import load_mapping

    return load_mapping(path)
