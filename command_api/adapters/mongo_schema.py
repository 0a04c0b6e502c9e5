"""The write side's MongoDB collections and indexes: the one place that names them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from events.log import EVENTS_COLLECTION, RECORDED_INDEX, RELAY_STATE_COLLECTION
from events.state_versions import CAMPAIGNS_COLLECTION, ID_VERSION_INDEX, ID_VERSION_KEYS, USERS_COLLECTION
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

USERS = USERS_COLLECTION
CAMPAIGNS = CAMPAIGNS_COLLECTION
EVENTS = EVENTS_COLLECTION
REFRESH_TOKENS = "refresh_tokens"
IDEMPOTENCY_KEYS = "idempotency_keys"
RELAY_STATE = RELAY_STATE_COLLECTION
# One aggregate's events in version order (unique): the relay's scans page through the log by it.
IN_ORDER_INDEX = "aggregate_version_unique"
# The scheduler's durable timers: each campaign's `timer` field (its pending transition, derived
# from its events), written by the command whose events set it, indexed by due time. Releases
# before kept them in a collection of their own, which the scheduler empties into the campaigns
# at start (`MongoDueTransitions.adopt_legacy`).
TIMER = "timer"
TIMER_DUE_AT = f"{TIMER}.due_at"
DUE_INDEX = "timer_due_at"
LEGACY_DUE_TRANSITIONS = "due_transitions"
# The scheduler's lease: which scheduler reads and fires the timers.
SCHEDULER_STATE = "scheduler_state"

# Only quarantined events are in it (none when all is well): the relay's status counts them every
# few seconds, and without it that count read the whole events log (18 ms per 1,000 events on
# SecantusDB, every 2 s: a quarter of the server at 30,000 events, and stalls of the command side
# and the relay behind it that grew with the log).
QUARANTINED_INDEX = "quarantined"
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# A request waits this long for an unreachable MongoDB before answering 503, not pymongo's 30 s.
SERVER_SELECTION_TIMEOUT_MS = 3000

Document = dict[str, Any]


def mongo_client(settings: Settings) -> AsyncMongoClient[Document]:
    """A client that hands back timezone-aware UTC datetimes; the URL's own timeouts win."""
    options: dict[str, Any] = {"tz_aware": True}
    if "serverselectiontimeoutms" not in settings.mongo_url.lower():
        options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
    return AsyncMongoClient(settings.mongo_url, **options)


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Create every index the write side relies on; safe to run from many processes at once."""
    await db[USERS].create_index([("email", ASCENDING)], unique=True, name="email_unique")
    await db[EVENTS].create_index(
        [("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)],
        unique=True,
        name=IN_ORDER_INDEX,
    )
    # What the relay's status counts as its backlog: the events recorded after the newest it
    # published. (Releases before the watermark kept a partial index of the unpublished events,
    # `unpublished_in_order`; a log that has it keeps it, and nothing reads it.)
    await db[EVENTS].create_index([("recorded_at", ASCENDING)], name=RECORDED_INDEX)
    await db[EVENTS].create_index(
        [("quarantine.at", ASCENDING)],
        partialFilterExpression={"quarantine": {"$exists": True}},
        name=QUARANTINED_INDEX,
    )
    # The scheduler's durable timers: each campaign's `timer` field, by due time (only campaigns
    # with a pending transition are in it).
    # Sparse, not partial: a range of due times is served by it on MongoDB and on SecantusDB
    # alike (SecantusDB never uses a partial index whose filter is `$exists`).
    await db[CAMPAIGNS].create_index([(TIMER_DUE_AT, ASCENDING)], sparse=True, name=DUE_INDEX)
    await db[CAMPAIGNS].create_index([("owner_id", ASCENDING), ("status", ASCENDING)], name="owner_status")
    # Anti-entropy's walk of each state collection, a slice of ids at a time
    # (events/state_versions.py): SecantusDB serves a range of `_id` only from an index of its own.
    for states in (CAMPAIGNS, USERS):
        await db[states].create_index(ID_VERSION_KEYS, name=ID_VERSION_INDEX)
    await db[REFRESH_TOKENS].create_index([("family_id", ASCENDING)], name="family")
    await db[REFRESH_TOKENS].create_index([("user_id", ASCENDING)], name="user")
    await db[REFRESH_TOKENS].create_index([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry")
    await db[IDEMPOTENCY_KEYS].create_index(
        [("created_at", ASCENDING)], expireAfterSeconds=IDEMPOTENCY_TTL_SECONDS, name="expiry"
    )


class IndexGate:
    """Indexes exist before the first write: created at start-up, or by the first write after
    MongoDB comes back (a write without the unique e-mail index could duplicate a user)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db
        self._ready = False
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self._ready

    async def ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await ensure_indexes(self._db)
                self._ready = True

    async def try_ensure(self) -> bool:
        try:
            await self.ensure()
        except PyMongoError as exc:
            log.warning("MongoDB indexes not created yet: %s", exc)
            return False
        return True
