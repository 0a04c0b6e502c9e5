"""The scheduler's side of the `due_transitions` collection: claim due timers, inspect the queue.

The timers themselves are written by the unit of work, in the transaction of the command whose
events set them (`MongoCampaignRepository`); firing one replaces or deletes it in the firing's
own transaction. Here several schedulers share the work: a scheduler claims a batch of timers
due soon in one transaction (one update guarded by their ids and their claims having expired),
each timer for `claim_seconds`, so no two schedulers hold one timer at once, and
a scheduler that died lets its claims expire (another then fires them, late). The claim only
spares work: the campaign's version check and state already make a second firing a no-op.
Every write here is transactional (see `_transact` for why).

Claims expire on the database's clock, the one every scheduler shares: its offset from this
host's clock is read (`hello.localTime`) now and then, and claims are written and compared in
it. (A `$expr` on `$$NOW` would do the same in the query, but the local SecantusDB then scans
every timer: 1.7 s instead of 0.13 s per claim of 200 among 5,000.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from command_api.adapters.mongo_documents import UNCLAIMED, due_timer_from_document
from command_api.adapters.mongo_schema import Document
from command_api.adapters.mongo_unit_of_work import (
    IN_CHUNK,
    MAJORITY,
    RETRY_BACKOFF_SECONDS,
    TRANSACTION_ATTEMPTS,
    chunked,
)
from command_api.domain.campaign import DueTimer
from events.envelope import utc_now

T = TypeVar("T")

# How often the database clock's offset from this host's is read again.
CLOCK_CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class TimerQueue:
    """What the monitor shows of the timers: how many, how many overdue (counted up to a limit:
    `overdue_capped` when there are at least that many), the next due time."""

    pending: int
    overdue: int
    next_due_at: datetime | None
    overdue_capped: bool = False


class MongoDueTransitions:
    def __init__(self, collection: AsyncCollection[Document], *, holder: str, claim_seconds: float) -> None:
        self._timers = collection
        self._holder = holder
        self._claim = timedelta(seconds=claim_seconds)
        self._offset = timedelta(0)
        self._offset_read_at = float("-inf")

    async def database_now(self) -> datetime:
        """The database server's current time, from its offset to this host's clock."""
        if time.monotonic() - self._offset_read_at > CLOCK_CHECK_SECONDS:
            before = utc_now()
            reply = await self._timers.database.command("hello")
            after = utc_now()
            server: datetime = reply["localTime"]
            server = server.replace(tzinfo=UTC) if server.tzinfo is None else server.astimezone(UTC)
            self._offset = server - (before + (after - before) / 2)
            self._offset_read_at = time.monotonic()
        return utc_now() + self._offset

    async def claim_due(
        self, until: datetime, now: datetime, limit: int, since: datetime | None = None
    ) -> list[DueTimer]:
        """Claim up to `limit` unclaimed timers due by `until` (and not before `since`, when
        given), earliest first (`now` is the scheduler's clock; whether a claim has expired is
        decided on the database's).

        The candidates' due times are read (earliest first, up to `limit`), then claimed in one
        transaction by due time: one update of every unclaimed timer due before the last
        candidate's due time, guarded by the claim having expired (a timer another scheduler
        claimed meanwhile does not match), the last due time's own candidates by their ids (so
        ties there never claim more than `limit`), and the claimed ones read back by this claim's
        token within that due time. Range statements, not a list of ids: the local SecantusDB
        matches each document against a whole `$in` list, so a claim of 500 by id cost it 0.5 s,
        by due time a few tens of milliseconds; and a statement per timer about a millisecond each.
        A timer a command wrote meanwhile due within the range is claimed too (it is due).

        Each statement reads every timer in its range, claimed or not: `since` (the last claim's
        due time, while a burst keeps claims full) spares rereading those this scheduler holds."""
        database_now = await self.database_now()
        low = {} if since is None else {"$gte": since}
        candidates = (
            await self._timers.find(
                {"due_at": {**low, "$lte": until}, "claimed_until": {"$lte": database_now}}, {"due_at": 1}
            )
            .sort("due_at", ASCENDING)
            .limit(limit)
            .to_list()
        )
        if not candidates:
            return []
        bound: datetime = candidates[-1]["due_at"]
        full = len(candidates) >= limit
        at_bound = [doc["_id"] for doc in candidates if doc["due_at"] == bound]
        token = f"{self._holder}:{uuid.uuid4().hex[:12]}"
        expired = {"$lte": database_now}
        claim_them = {"$set": {"claimed_by": token, "claimed_until": database_now + self._claim}}

        async def claim(session: AsyncClientSession) -> list[Document]:
            if not full:
                # Every unclaimed timer due by `until` was a candidate: the range alone is the claim.
                await self._timers.update_many(
                    {"due_at": {**low, "$lte": bound}, "claimed_until": expired}, claim_them, session=session
                )
            else:
                # More may be due at the bound than the limit leaves room for: those by id.
                await self._timers.update_many(
                    {"due_at": {**low, "$lt": bound}, "claimed_until": expired}, claim_them, session=session
                )
                for ids in chunked(at_bound, IN_CHUNK):
                    await self._timers.update_many(
                        {"_id": {"$in": ids}, "due_at": bound, "claimed_until": expired},
                        claim_them,
                        session=session,
                    )
            return await self._timers.find(
                {"due_at": {**low, "$lte": bound}, "claimed_by": token}, session=session
            ).to_list()

        claimed = await self._transact(claim)
        claimed.sort(key=lambda doc: doc["due_at"])
        return [due_timer_from_document(doc) for doc in claimed]

    async def release(self, timers: Sequence[DueTimer]) -> None:
        """Give claimed timers back at once (their firing failed, or they were not due after all)."""
        if not timers:
            return

        async def release(session: AsyncClientSession) -> None:
            for these in _these(timers):
                await self._timers.update_many(
                    these, {"$set": {"claimed_until": UNCLAIMED, "claimed_by": None}}, session=session
                )

        await self._transact(release)

    async def discard(self, timers: Sequence[DueTimer]) -> None:
        """Drop timers that fired nothing and never will (their campaigns moved on without them).

        Only those very timers: one a command wrote meanwhile has another id and stays."""
        if not timers:
            return

        async def discard(session: AsyncClientSession) -> None:
            for these in _these(timers):
                await self._timers.delete_many(these, session=session)

        await self._transact(discard)

    async def _transact(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """`work` in a transaction, tried again on a transient error; its result.

        Never a plain (non-transactional) write: on SecantusDB such a write that meets a timer an
        open transaction has written retries without end while holding the collection's lock, and
        a firing transaction that writes its next timer then waits on that lock for ever. Inside a
        transaction the conflict is an error at once (`TransientTransactionError`): the whole
        claim is tried again, on fresh data."""
        client = self._timers.database.client
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            async with client.start_session() as session:
                try:
                    await session.start_transaction(write_concern=MAJORITY)
                    result = await work(session)
                    await session.commit_transaction()
                    return result
                except PyMongoError as exc:
                    if session.in_transaction:
                        with contextlib.suppress(PyMongoError):
                            await session.abort_transaction()
                    transient = exc.has_error_label("TransientTransactionError")
                    if not transient or attempt == TRANSACTION_ATTEMPTS:
                        raise
                await asyncio.sleep(RETRY_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable")

    async def queue(
        self, now: datetime, *, overdue_limit: int, next_due_at: datetime | None = None
    ) -> TimerQueue:
        """The timers as the monitor shows them, at a bounded cost while a burst fires.

        `pending` is the collection's estimated count (its metadata on MongoDB; a scan without
        decoding on SecantusDB); `overdue` is counted up to `overdue_limit` (the index bounds the
        work on MongoDB); `next_due_at` is the caller's when it knows one (the earliest timer the
        scheduler holds), else the earliest in the collection (a walk of the whole index on
        SecantusDB, so it is read only when the scheduler holds none)."""
        pending = await self._timers.estimated_document_count()
        if not pending:
            return TimerQueue(pending=0, overdue=0, next_due_at=None)
        overdue = await self._timers.count_documents({"due_at": {"$lte": now}}, limit=overdue_limit)
        if next_due_at is None:
            first = await self._timers.find_one({}, {"due_at": 1}, sort=[("due_at", ASCENDING)])
            next_due_at = first["due_at"] if first else None
        return TimerQueue(
            pending=pending,
            overdue=overdue,
            next_due_at=next_due_at,
            overdue_capped=overdue >= overdue_limit,
        )


def _these(timers: Sequence[DueTimer]) -> list[Document]:
    """Filters for exactly these timers, `IN_CHUNK` at a time: a timer's id names its campaign,
    so each pair of lists matches no other campaign's timer, nor a timer a command wrote
    meanwhile."""
    return [
        {"_id": {"$in": [t.campaign_id for t in part]}, "timer_id": {"$in": [t.timer_id for t in part]}}
        for part in chunked(list(timers), IN_CHUNK)
    ]
