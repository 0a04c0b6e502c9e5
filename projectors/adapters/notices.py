"""The pub/sub message a projection publishes for each applied event."""

from __future__ import annotations

import orjson

from events import EventEnvelope
from readmodels.json_form import json_time


def notice_prefix(envelope: EventEnvelope, projection: str, owner_id: str | None = None) -> bytes:
    """The pub/sub message of an applied event, without its closing brace (Lua adds projected_at).
    A campaign's names its owner: the query API then drops only the list pages that may hold it."""
    message: dict[str, object] = {
        "event_type": envelope.event_type,
        "aggregate_type": envelope.aggregate_type,
        "aggregate_id": envelope.aggregate_id,
        "aggregate_version": envelope.aggregate_version,
        "occurred_at": json_time(envelope.occurred_at),
        "actor_id": envelope.actor_id,
        "event_id": str(envelope.event_id),
        "correlation_id": envelope.correlation_id,
        "projection": projection,
    }
    if owner_id:
        message["owner_id"] = owner_id
    return orjson.dumps(message)[:-1]
