"""The scheduler's side of the `due_transitions` collection: read due timers, inspect the queue.

The timers themselves are written by the unit of work, in the transaction of the command whose
events set them (`MongoCampaignRepository`); firing one replaces or deletes it in the firing's
own transaction. One scheduler at a time reads and fires them: the one holding the scheduler's
lease (`RelayLease` with `SCHEDULER_LEASE_ID`, one document renewed on the database's clock). So
reading the due timers writes nothing: no per-timer claim, which cost the local SecantusDB an
update per timer (~0.24 ms each) on top of the firing. A scheduler that still fires after
losing its lease (paused past its term) does no harm: the campaign's version check and state
make a second firing a no-op. Every write here is transactional (see `_transact` for why).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from command_api.adapters.mongo_documents import due_timer_from_document
from command_api.adapters.mongo_schema import Document
from command_api.adapters.mongo_unit_of_work import (
    IN_CHUNK,
    MAJORITY,
    RETRY_BACKOFF_SECONDS,
    TRANSACTION_ATTEMPTS,
    chunked,
)
from command_api.domain.campaign import DueTimer

T = TypeVar("T")


@dataclass(frozen=True)
class TimerQueue:
    """What the monitor shows of the timers: how many, how many overdue (counted up to a limit:
    `overdue_capped` when there are at least that many), the next due time."""

    pending: int
    overdue: int
    next_due_at: datetime | None
    overdue_capped: bool = False


class MongoDueTransitions:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._timers = collection

    async def read_due(self, until: datetime, limit: int, since: datetime | None = None) -> list[DueTimer]:
        """Up to `limit` timers due by `until` (and not before `since`, when given), earliest first.

        One read by due-time range (the `due_at` index); nothing is written: the scheduler's lease
        decides who fires, and the scheduler itself keeps track of the timers it holds."""
        low = {} if since is None else {"$gte": since}
        documents = (
            await self._timers.find({"due_at": {**low, "$lte": until}})
            .sort("due_at", ASCENDING)
            .limit(limit)
            .to_list()
        )
        return [due_timer_from_document(doc) for doc in documents]

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
        write is tried again, on fresh data."""
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
