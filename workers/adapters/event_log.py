"""A campaign's history for its report, read from the events log (`events.log`)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from events import EventEnvelope
from events.log import EventsLog, events_collection


class MongoEventLog:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.log = EventsLog(events_collection(client, database))

    async def history(self, campaign_id: str, up_to_version: int) -> list[EventEnvelope]:
        return await self.log.aggregate_events("campaign", campaign_id, up_to_version)
