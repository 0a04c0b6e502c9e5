"""The write side's state versions, read-only: which version of each aggregate MongoDB holds.

The command side keeps each aggregate's current state in its own collection (named here), with
the version of its last event, written in the same transaction as the events. Anti-entropy reads
these versions back, in pages, to compare them with the read models'.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

CAMPAIGNS_COLLECTION = "campaigns"
USERS_COLLECTION = "users"
CLOSE_SECONDS = 5.0
# The collection holding each aggregate type's state.
STATE_COLLECTIONS: dict[str, str] = {"campaign": CAMPAIGNS_COLLECTION, "user": USERS_COLLECTION}


class StateVersions:
    """Every (aggregate id, version) of one aggregate type, page by page from one cursor."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.database = database

    async def pages(self, aggregate_type: str, size: int) -> AsyncGenerator[list[tuple[str, int]], None]:
        """Pages of at most `size`, in the collection's own order (one cursor for the whole walk:
        a range query per page would cost a scan per page on some servers)."""
        cursor = self.database[STATE_COLLECTIONS[aggregate_type]].find({}, {"version": 1}, batch_size=size)
        page: list[tuple[str, int]] = []
        try:
            async for doc in cursor:
                page.append((str(doc["_id"]), int(doc.get("version", 0))))
                if len(page) == size:
                    yield page
                    page = []
            if page:
                yield page
        finally:
            # Bounded: a walk dropped while MongoDB does not answer must not hold up a stop.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cursor.close(), CLOSE_SECONDS)
