"""Collapse a batch to the newest event per item, so a sink writes each row at most once per batch."""

from __future__ import annotations

from collections.abc import Iterable

from kcl_relay.cdc.event import ChangeEvent

__all__ = ["coalesce"]


def coalesce(events: Iterable[ChangeEvent]) -> list[ChangeEvent]:
    """At most one event per key_id: the greatest `order`, the later one on an exact tie.

    The result lists keys in order of first appearance, so equal input gives equal output on every worker.
    """
    newest: dict[str, ChangeEvent] = {}  # dicts keep insertion order: the first appearance fixes the slot
    for event in events:
        key_id = event.key_id
        current = newest.get(key_id)
        if current is None or event.order >= current.order:
            newest[key_id] = event
    return list(newest.values())
