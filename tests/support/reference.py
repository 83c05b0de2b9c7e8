"""The table the relay must end with, computed the simplest possible way, for comparison with a real sink."""

from __future__ import annotations

from collections.abc import Iterable

from kcl_relay.cdc.event import ChangeEvent, Item


def reference_state(events: Iterable[ChangeEvent]) -> dict[str, Item]:
    """key_id -> image after applying `events` with the relay's semantics, whatever the delivery order.

    Per key only the event with the greatest order (version, then stream position) counts; on an exactly equal
    order the later one in the input wins. That event's image is the row, or no row when it is a REMOVE: an older
    INSERT or MODIFY delivered after a newer REMOVE never brings the row back.
    """
    newest: dict[str, ChangeEvent] = {}
    for event in events:
        current = newest.get(event.key_id)
        if current is None or event.order >= current.order:
            newest[event.key_id] = event
    return {key_id: event.image for key_id, event in newest.items() if event.op != "REMOVE" and event.image is not None}
