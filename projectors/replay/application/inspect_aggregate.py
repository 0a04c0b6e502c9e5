"""Inspect one aggregate as it was: its events from the log, up to a version or a moment, folded."""

from __future__ import annotations

from projectors.replay.application.ports import AggregateHistory
from projectors.replay.domain.time_travel import FOLDS, AsOf, Inspection, inspect_events


async def inspect_aggregate(history: AggregateHistory, aggregate_id: str, as_of: AsOf) -> Inspection | None:
    """None if no aggregate has this id. Ids are UUIDs, so at most one type answers."""
    for aggregate_type in FOLDS:
        events = await history.aggregate_events(aggregate_type, aggregate_id)
        if events:
            return inspect_events(aggregate_type, events, as_of)
    return None
