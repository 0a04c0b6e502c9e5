"""One publishing relay at a time: a lease document in MongoDB, renewed while held."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from command_api.adapters.mongo_schema import Document
from events.envelope import utc_now

log = logging.getLogger(__name__)

LEASE_ID = "relay_lease"
# Believe we hold the lease for less than its stored term, so a slow renewal makes us stop
# before another relay may start.
SAFETY_FRACTION = 0.75


class LeaseLost(Exception):
    """This relay no longer holds the lease and must not publish."""


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RelayLease:
    def __init__(
        self, collection: AsyncCollection[Document], *, seconds: float, holder: str | None = None
    ) -> None:
        self._collection = collection
        self._seconds = seconds
        self.holder = holder or new_holder_id()
        self._held_until = 0.0
        self._acquired = asyncio.Event()

    @property
    def held(self) -> bool:
        return time.monotonic() < self._held_until

    def ensure_held(self) -> None:
        if not self.held:
            self._acquired.clear()
            raise LeaseLost(f"relay {self.holder} lost the lease")

    async def wait_until_held(self) -> None:
        while not self.held:
            self._acquired.clear()
            await self._acquired.wait()

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or expired, or renew it if ours; False if another holds it."""
        asked_at = time.monotonic()
        now = utc_now()
        try:
            await self._collection.find_one_and_update(
                {"_id": LEASE_ID, "$or": [{"holder": self.holder}, {"expires_at": {"$lte": now}}]},
                {"$set": {"holder": self.holder, "expires_at": now + timedelta(seconds=self._seconds)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # The upsert collided with the existing lease document: someone else holds it.
            self._lose()
            return False
        was_held = self.held
        self._held_until = asked_at + self._seconds * SAFETY_FRACTION
        self._acquired.set()
        if not was_held:
            log.info("relay %s holds the lease", self.holder)
        return True

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

    async def current_holder(self) -> str | None:
        doc = await self._collection.find_one({"_id": LEASE_ID, "expires_at": {"$gt": utc_now()}})
        return str(doc["holder"]) if doc else None

    async def release(self) -> None:
        """Hand the lease over at once instead of letting it expire."""
        self._lose()
        await self._collection.update_one(
            {"_id": LEASE_ID, "holder": self.holder}, {"$set": {"expires_at": utc_now()}}
        )

    def _lose(self) -> None:
        if self._held_until:
            log.info("relay %s does not hold the lease", self.holder)
        self._held_until = 0.0
        self._acquired.clear()
