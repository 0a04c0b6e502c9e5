"""The scheduler's side of the `due_transitions` collection: claim due timers, inspect the queue.

The timers themselves are written by the unit of work, in the transaction of the command whose
events set them (`MongoCampaignRepository`); firing one replaces or deletes it in the firing's
own transaction. Here several schedulers share the work: a scheduler claims a batch of timers
due soon with one `update_many` on the database clock (`$$NOW`), each timer for `claim_seconds`,
so no two schedulers hold one timer at once, and a scheduler that died lets its claims expire
(another then fires them, late). The claim only spares work: the campaign's version check and
state already make a second firing a no-op.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from command_api.adapters.mongo_documents import UNCLAIMED, due_timer_from_document
from command_api.adapters.mongo_schema import Document
from command_api.domain.campaign import DueTimer


@dataclass(frozen=True)
class TimerQueue:
    """What the monitor shows of the timers: how many, how many overdue, the next due time."""

    pending: int
    overdue: int
    next_due_at: datetime | None


class MongoDueTransitions:
    def __init__(self, collection: AsyncCollection[Document], *, holder: str, claim_seconds: float) -> None:
        self._timers = collection
        self._holder = holder
        self._claim_ms = int(claim_seconds * 1000)

    async def claim_due(self, until: datetime, now: datetime, limit: int) -> list[DueTimer]:
        """Claim up to `limit` unclaimed timers due by `until`, earliest first.

        `now` only narrows the candidates (an index scan on due_at); whether a claim has
        expired is decided on the database's clock, the one every scheduler shares."""
        candidates = (
            await self._timers.find({"due_at": {"$lte": until}, "claimed_until": {"$lte": now}}, {"_id": 1})
            .sort("due_at", ASCENDING)
            .limit(limit)
            .to_list()
        )
        if not candidates:
            return []
        token = f"{self._holder}:{uuid.uuid4().hex[:12]}"
        claim: list[dict[str, Any]] = [
            {"$set": {"claimed_by": token, "claimed_until": {"$add": ["$$NOW", self._claim_ms]}}}
        ]
        await self._timers.update_many(
            {
                "_id": {"$in": [c["_id"] for c in candidates]},
                # Replaced meanwhile by a later timer: not due, not ours to hold.
                "due_at": {"$lte": until},
                "$expr": {"$lte": ["$claimed_until", "$$NOW"]},
            },
            claim,
        )
        claimed = await self._timers.find({"claimed_by": token}).sort("due_at", ASCENDING).to_list()
        return [due_timer_from_document(doc) for doc in claimed]

    async def release(self, timer: DueTimer) -> None:
        """Give a claimed timer back at once (its firing failed, or it was not due after all)."""
        await self._timers.update_one(
            {"_id": timer.campaign_id, "timer_id": timer.timer_id},
            {"$set": {"claimed_until": UNCLAIMED, "claimed_by": None}},
        )

    async def discard(self, timer: DueTimer) -> None:
        """Drop a timer that fired nothing and never will (its campaign has moved on without it).

        Only that very timer: one a command wrote meanwhile has another id and stays."""
        await self._timers.delete_one({"_id": timer.campaign_id, "timer_id": timer.timer_id})

    async def queue(self, now: datetime) -> TimerQueue:
        first = await self._timers.find_one({}, {"due_at": 1}, sort=[("due_at", ASCENDING)])
        return TimerQueue(
            pending=await self._timers.count_documents({}),
            overdue=await self._timers.count_documents({"due_at": {"$lte": now}}) if first else 0,
            next_due_at=first["due_at"] if first else None,
        )
