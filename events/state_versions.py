"""The write side's state versions, read-only: which version of each aggregate MongoDB holds.

The command side keeps each aggregate's current state in its own collection (named here), with
the version of its last event, written in the same transaction as the events. Anti-entropy reads
these versions back, in `_id` order and in pages, to compare them with the read models'.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

CAMPAIGNS_COLLECTION = "campaigns"
USERS_COLLECTION = "users"
# The collection holding each aggregate type's state.
STATE_COLLECTIONS: dict[str, str] = {"campaign": CAMPAIGNS_COLLECTION, "user": USERS_COLLECTION}


class StateVersions:
    """Pages of (aggregate id, version) of one aggregate type, in id order."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.database = database

    async def page(self, aggregate_type: str, after_id: str | None, limit: int) -> list[tuple[str, int]]:
        """At most `limit` aggregates whose id sorts after `after_id` (from the first if None)."""
        query: dict[str, Any] = {} if after_id is None else {"_id": {"$gt": after_id}}
        cursor = (
            self.database[STATE_COLLECTIONS[aggregate_type]]
            .find(query, {"version": 1})
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        return [(str(doc["_id"]), int(doc.get("version", 0))) async for doc in cursor]

    async def version(self, aggregate_type: str, aggregate_id: str) -> int | None:
        """The aggregate's version now (None if the write side does not hold it)."""
        doc = await self.database[STATE_COLLECTIONS[aggregate_type]].find_one(
            {"_id": aggregate_id}, {"version": 1}
        )
        return None if doc is None else int(doc.get("version", 0))
