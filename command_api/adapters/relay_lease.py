"""One publishing relay at a time: a lease document in MongoDB, renewed while held.

The same lease (another document, `lease_id`) makes one scheduler at a time the one that reads
and fires due timers (`SCHEDULER_LEASE_ID`).

Expiry is decided by the database's clock (`$$NOW` in an update pipeline), never by a host's:
two relays on hosts whose clocks disagree still agree on who holds the lease. Each takeover
increments the lease's `epoch`. The lease only decides who tries to publish; what stops a
stale relay from publishing is Kafka's fencing of its transactional producer (see
kafka_publisher.py): the lease keeps relays from fencing each other back and forth.

Locally a holder believes it holds the lease for less than the stored term, counted on its own
monotonic clock from before it asked (a duration, never a wall-clock time), so a slow renewal
makes it stop before another relay may start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.write_concern import WriteConcern

from command_api.adapters.mongo_schema import Document

log = logging.getLogger(__name__)

LEASE_ID = "relay_lease"
SCHEDULER_LEASE_ID = "scheduler_lease"
SAFETY_FRACTION = 0.75


class LeaseLost(Exception):
    """This relay no longer holds the lease and must not publish."""


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# Dates are compared as milliseconds: SecantusDB orders a stored date against $$NOW wrongly, and
# the same expression means the same on MongoDB.
_NOW_MS: dict[str, Any] = {"$toLong": "$$NOW"}
_EXPIRES_MS: dict[str, Any] = {"$ifNull": [{"$toLong": "$expires_at"}, 0]}


class RelayLease:
    def __init__(
        self,
        collection: AsyncCollection[Document],
        *,
        seconds: float,
        holder: str | None = None,
        lease_id: str = LEASE_ID,
        role: str = "relay",
    ) -> None:
        # A lease a failover could roll back would let two relays hold it.
        self._collection = collection.with_options(write_concern=WriteConcern("majority"))
        self._seconds = seconds
        self.holder = holder or new_holder_id()
        self._lease_id = lease_id
        self._role = role
        self.epoch = 0
        self._held_until = 0.0
        self._acquired = asyncio.Event()

    @property
    def held(self) -> bool:
        return time.monotonic() < self._held_until

    def ensure_held(self) -> None:
        if not self.held:
            self._acquired.clear()
            raise LeaseLost(f"{self._role} {self.holder} lost the lease")

    async def wait_until_held(self) -> None:
        while not self.held:
            self._acquired.clear()
            await self._acquired.wait()

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or expired (a new epoch), or renew it if ours (same epoch);
        False if another relay holds it. The database decides, on its own clock."""
        asked_at = time.monotonic()
        try:
            lease = await self._collection.find_one_and_update(
                {"_id": self._lease_id},
                self._take_or_renew(),
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # Two first relays upserted at once; the other one's insert won.
            self._lose()
            return False
        if lease is None or lease.get("holder") != self.holder:
            self._lose()
            return False
        was_held = self.held
        if lease["epoch"] != self.epoch:
            was_held = False
            self.epoch = int(lease["epoch"])
        self._held_until = asked_at + self._seconds * SAFETY_FRACTION
        self._acquired.set()
        if not was_held:
            log.info("%s %s holds the lease (epoch %d)", self._role, self.holder, self.epoch)
        return True

    def _take_or_renew(self) -> list[dict[str, Any]]:
        """An update pipeline: the database's clock decides whether the lease is free."""
        ours = {"$and": [{"$eq": ["$holder", self.holder]}, {"$eq": ["$epoch", self.epoch]}]}
        expired = {"$lte": [_EXPIRES_MS, _NOW_MS]}
        next_epoch = {"$add": [{"$ifNull": ["$epoch", 0]}, 1]}
        return [
            {"$set": {"_take": {"$or": [ours, expired]}}},
            {
                "$set": {
                    "epoch": {"$cond": ["$_take", {"$cond": [ours, "$epoch", next_epoch]}, "$epoch"]},
                    "holder": {"$cond": ["$_take", self.holder, "$holder"]},
                    "expires_at": {
                        "$cond": ["$_take", {"$add": ["$$NOW", int(self._seconds * 1000)]}, "$expires_at"]
                    },
                }
            },
            {"$unset": "_take"},
        ]

    async def keep(self) -> None:
        """Renew while held, or keep trying to take it; runs until cancelled."""
        while True:
            try:
                await self.try_acquire()
            except PyMongoError as exc:
                log.warning("lease renewal failed: %s", exc)
            except Exception:
                # Whatever went wrong, this loop must go on: without it the relay would wait forever.
                log.exception("unexpected error renewing the lease")
            if not self.held:
                self._lose()
            await asyncio.sleep(self._seconds / 4)

    async def current(self) -> Document | None:
        """The lease as the database sees it now (holder, epoch), or None when it has expired."""
        cursor = await self._collection.aggregate(
            [
                {"$match": {"_id": self._lease_id}},
                {"$set": {"_alive": {"$gt": [_EXPIRES_MS, _NOW_MS]}}},
            ]
        )
        for lease in await cursor.to_list():
            if lease.pop("_alive"):
                return lease
        return None

    async def current_holder(self) -> str | None:
        lease = await self.current()
        return str(lease["holder"]) if lease else None

    async def release(self) -> None:
        """Hand the lease over at once instead of letting it expire."""
        self._lose()
        await self._collection.update_one(
            {"_id": self._lease_id, "holder": self.holder, "epoch": self.epoch},
            [{"$set": {"expires_at": "$$NOW"}}],
        )

    def step_down(self) -> None:
        """Stop believing we hold the lease (the keeper may take it again if it is still ours)."""
        self._lose()

    def _lose(self) -> None:
        if self._held_until:
            log.info("%s %s does not hold the lease (epoch %d)", self._role, self.holder, self.epoch)
        self._held_until = 0.0
        self._acquired.clear()
