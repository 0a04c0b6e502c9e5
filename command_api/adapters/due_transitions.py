"""The scheduler's side of the durable timers: read due timers, inspect the queue.

A timer is its campaign's `timer` field (`campaigns`, sparse index `timer_due_at`), written by
the unit of work in the very update that records the command whose events set it
(`MongoCampaignRepository`); firing one rewrites or removes it in the firing's own update. One
scheduler at a time reads and fires them: the one holding the scheduler's
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
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from command_api.adapters.mongo_documents import due_timer_from_document
from command_api.adapters.mongo_schema import TIMER, TIMER_DUE_AT, Document
from command_api.adapters.mongo_unit_of_work import (
    IN_CHUNK,
    MAJORITY,
    RETRY_BACKOFF_SECONDS,
    TRANSACTION_ATTEMPTS,
    ReadAhead,
    chunked,
)
from command_api.domain.campaign import DueTimer

T = TypeVar("T")

DUE_AT = TIMER_DUE_AT
TIMER_ID = f"{TIMER}.timer_id"
# The status report's windows of due time (`MongoDueTransitions.queue`): about this many timers
# a read, the first window's width when nothing is known yet, and its bounds.
STATUS_PAGE = 1000
FIRST_WINDOW = timedelta(hours=1)
MIN_WINDOW = timedelta(milliseconds=1)
MAX_WINDOW = timedelta(days=365 * 10_000)
EMPTY_GROWTH = 8
# The latest due time a window reaches before the last, open-ended one.
LAST_DUE = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TimerQueue:
    """What the monitor shows of the timers: how many, how many overdue (each counted up to a
    limit: `pending_capped`, `overdue_capped` when there are at least that many), the next due
    time; and when the counts were taken (`counted_at`), and whether they are older than the
    report's interval because the scheduler fires a backlog (`deferred`): both set by the status
    report's `QueueReading`."""

    pending: int
    overdue: int
    next_due_at: datetime | None
    overdue_capped: bool = False
    pending_capped: bool = False
    counted_at: datetime | None = None
    deferred: bool = False


class MongoDueTransitions:
    def __init__(
        self,
        campaigns: AsyncCollection[Document],
        read_ahead: ReadAhead | None = None,
        legacy: AsyncCollection[Document] | None = None,
    ) -> None:
        self._campaigns = campaigns
        # Where the campaigns read with their timers are kept for the firing's unit of work.
        self._read_ahead = read_ahead
        # The collection earlier releases kept the timers in (`adopt_legacy`).
        self._legacy = legacy
        # The status report's first window of due time, as the last report left it.
        self._status_width = FIRST_WINDOW

    async def read_due(self, until: datetime, limit: int, since: datetime | None = None) -> list[DueTimer]:
        """Up to `limit` timers due by `until` (and not before `since`, when given), earliest first.

        One read by due-time range (the `timer_due_at` index); nothing is written: the scheduler's
        lease decides who fires, and the scheduler itself keeps track of the timers it holds."""
        low = {} if since is None else {"$gte": since}
        # Whole campaigns, not only their timers: the firing takes them from `read_ahead` rather
        # than read them again (and on SecantusDB a projection costs more than it saves).
        documents = (
            await self._campaigns.find({DUE_AT: {**low, "$lte": until}})
            .sort(DUE_AT, ASCENDING)
            .limit(limit)
            .to_list()
        )
        if self._read_ahead is not None:
            self._read_ahead.keep(documents)
        return [due_timer_from_document(doc) for doc in documents]

    async def discard(self, timers: Sequence[DueTimer]) -> None:
        """Drop timers that fired nothing and never will (their campaigns moved on without them).

        Only those very timers: one a command wrote meanwhile has another id and stays."""
        if not timers:
            return

        async def discard(session: AsyncClientSession) -> None:
            for these in _these(timers):
                await self._campaigns.update_many(these, {"$unset": {TIMER: ""}}, session=session)

        await self._transact(discard)

    async def adopt_legacy(self) -> int:
        """Move the timers an earlier release kept in a collection of their own into their
        campaigns' `timer` field, `IN_CHUNK` a transaction, and drop that collection once empty;
        how many moved. A campaign that has a timer already keeps it (a command wrote it since).
        One moved from a campaign that has moved on since is stale, and harmless: firing it finds
        its transition no longer pending, and discards it. Safe to run again, and from several
        schedulers at once."""
        legacy = self._legacy
        if legacy is None:
            return 0
        moved = 0
        while documents := await legacy.find().limit(IN_CHUNK).to_list():

            async def move(session: AsyncClientSession, documents: list[Document] = documents) -> None:
                for doc in documents:
                    timer = {key: doc[key] for key in ("timer_id", "action", "target_at", "due_at")}
                    await self._campaigns.update_one(
                        {"_id": doc["_id"], TIMER: {"$exists": False}},
                        {"$set": {TIMER: timer}},
                        session=session,
                    )
                await legacy.delete_many({"_id": {"$in": [doc["_id"] for doc in documents]}}, session=session)

            await self._transact(move)
            moved += len(documents)
        await legacy.drop()
        return moved

    async def _transact(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """`work` in a transaction, tried again on a transient error; its result.

        Never a plain (non-transactional) write: on SecantusDB such a write that meets a timer an
        open transaction has written retries without end while holding the collection's lock, and
        a firing transaction that writes its next timer then waits on that lock for ever. Inside a
        transaction the conflict is an error at once (`TransientTransactionError`): the whole
        write is tried again, on fresh data."""
        client = self._campaigns.database.client
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
        self,
        now: datetime,
        *,
        overdue_limit: int,
        pending_limit: int,
        next_due_at: datetime | None = None,
    ) -> TimerQueue:
        """The timers as the monitor shows them, at a bounded cost however many there are.

        `pending` and `overdue` are counted up to their limits over the `timer_due_at` index;
        `next_due_at` is the caller's when it knows one (the earliest timer the scheduler holds),
        else the earliest in the first window that has one. `pending` is counted window by
        window of due time (`_pending_windows`): on SecantusDB a count, or a find sorted for its
        first, reads every campaign its range matches before it counts or limits, under its
        storage lock, so one count of all 20,000 pending timers took 836 ms and the earliest
        of them another 736 ms (a probe, session 36), stalling every command meanwhile."""
        pending, first_due = await self._pending_windows(now, pending_limit, want_first=next_due_at is None)
        if not pending:
            return TimerQueue(pending=0, overdue=0, next_due_at=None)
        overdue = await self._campaigns.count_documents({DUE_AT: {"$lte": now}}, limit=overdue_limit)
        return TimerQueue(
            pending=pending,
            overdue=overdue,
            next_due_at=next_due_at or first_due,
            overdue_capped=overdue >= overdue_limit,
            pending_capped=pending >= pending_limit,
        )

    async def _pending_windows(
        self, now: datetime, limit: int, *, want_first: bool
    ) -> tuple[int, datetime | None]:
        """The pending timers counted up to `limit`, and (`want_first`) the earliest due time.

        Windows of due time follow each other with no gap: the first from the earliest due
        (overdue included) to `now` + its width, the last open-ended. Each is sized from the
        density the window before it found, to hold about `STATUS_PAGE` timers (a window of
        ~500 counted in 24 ms in the probe); an empty one grows `EMPTY_GROWTH` times, so a far
        future is crossed in a few reads. The first window's width is kept for the next report."""
        counted, first_due = 0, None
        low: datetime | None = None
        width = self._status_width
        while counted < limit:
            start = now if low is None else low
            high = start + width if LAST_DUE - start > width else None
            window: Document = {}
            if low is not None:
                window["$gte"] = low
            if high is not None:
                window["$lt"] = high
            within = {DUE_AT: window or {"$exists": True}}
            found = await self._campaigns.count_documents(within, limit=limit - counted)
            if found and want_first and first_due is None:
                first = await self._campaigns.find_one(within, {TIMER: 1}, sort=[(DUE_AT, ASCENDING)])
                first_due = first[TIMER]["due_at"] if first else None
            counted += found
            width = _next_width(width, found)
            if low is None:
                self._status_width = width
            if high is None:
                break
            low = high
        return counted, first_due


def _next_width(width: timedelta, found: int) -> timedelta:
    """The next window's width: about `STATUS_PAGE` timers at the density this one found."""
    if not found:
        return min(width * EMPTY_GROWTH, MAX_WINDOW)
    scale = min(max(STATUS_PAGE / found, 0.25), 4.0)
    return min(max(width * scale, MIN_WINDOW), MAX_WINDOW)


def _these(timers: Sequence[DueTimer]) -> list[Document]:
    """Filters for exactly these timers, `IN_CHUNK` at a time: a timer's id names its campaign,
    so each pair of lists matches no other campaign's timer, nor a timer a command wrote
    meanwhile."""
    return [
        {"_id": {"$in": [t.campaign_id for t in part]}, TIMER_ID: {"$in": [t.timer_id for t in part]}}
        for part in chunked(list(timers), IN_CHUNK)
    ]
