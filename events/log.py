"""The MongoDB events log, read-only: its collection, and one aggregate's events in version order.

The command side appends to the collection named here (in the same transaction as the state
it changes); everything that reads the log back (the query API's history and time travel, the
report worker, replay) reads it through this module.

History and time travel fold the log rather than keep every version in Redis: they are rare,
per-aggregate reads that need all versions, while keeping versions in Redis would cost memory
on every campaign to serve a few audit reads. The log is the source of truth, indexed on
(aggregate_id, aggregate_version), so one aggregate's events are one indexed query; and it
also holds events the relay has not published yet. The hot paths never touch MongoDB.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from events import EventEnvelope, from_log_document

EVENTS_COLLECTION = "events"


def events_collection(
    client: AsyncMongoClient[dict[str, Any]], database: str
) -> AsyncCollection[dict[str, Any]]:
    return client[database][EVENTS_COLLECTION]


class EventsLog:
    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def aggregate_events(
        self,
        aggregate_type: str,
        aggregate_id: str,
        up_to_version: int | None = None,
        *,
        published_only: bool = False,
    ) -> list[EventEnvelope]:
        """The aggregate's events in version order; `published_only`: those the relay has
        published to Kafka (not the ones still in flight)."""
        query: dict[str, Any] = {"aggregate_id": aggregate_id, "aggregate_type": aggregate_type}
        if up_to_version is not None:
            query["aggregate_version"] = {"$lte": up_to_version}
        if published_only:
            query["published"] = True
        cursor = self.collection.find(query).sort("aggregate_version", ASCENDING)
        # Decoding upcasts old schema versions, so a fold only ever sees current payloads.
        return [from_log_document(document) async for document in cursor]

    async def aggregate_page(
        self, aggregate_type: str, aggregate_id: str, after_version: int, limit: int
    ) -> list[EventEnvelope]:
        """At most `limit` events after `after_version`, in version order."""
        query: dict[str, Any] = {
            "aggregate_id": aggregate_id,
            "aggregate_type": aggregate_type,
            "aggregate_version": {"$gt": after_version},
        }
        cursor = self.collection.find(query).sort("aggregate_version", ASCENDING).limit(limit)
        return [from_log_document(document) async for document in cursor]
