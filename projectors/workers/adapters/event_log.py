"""The MongoDB events log, read-only: a campaign's history for its report."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, AsyncMongoClient

from events import EventEnvelope, from_log_document

EVENTS_COLLECTION = "events"


class MongoEventLog:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.events = client[database][EVENTS_COLLECTION]

    async def history(self, campaign_id: str, up_to_version: int) -> list[EventEnvelope]:
        cursor = self.events.find(
            {
                "aggregate_type": "campaign",
                "aggregate_id": campaign_id,
                "aggregate_version": {"$lte": up_to_version},
            }
        ).sort("aggregate_version", ASCENDING)
        # Decoding upcasts old schema versions, so the fold only ever sees current payloads.
        return [from_log_document(document) async for document in cursor]
