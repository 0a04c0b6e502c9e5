"""The outbox relay's view of the `events` collection: new inserts from a change stream, and the
unpublished events a catch-up scan pages through.

The change stream resumes from a persisted token. A reader task keeps one getMore outstanding
and queues what each brings, so the publishing loop takes every change already arrived at once,
without waiting out a getMore's max await (publishing and the next getMore overlap). Only
public pymongo API is used: `try_next()` runs at most one getMore.

When the stream cannot resume (its history is gone from the oplog: ChangeStreamHistoryLost, or
the token is unknown or unusable), the token is dropped, an alert is raised, and the stream is
opened anew; the catch-up scan that always follows an open then publishes every unpublished
event, so nothing is skipped: the relay never just goes on "from now".

Reads use read concern majority: an event a failover could roll back is never published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from bson import Timestamp
from pymongo import ASCENDING
from pymongo.asynchronous.change_stream import AsyncCollectionChangeStream
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern

from command_api.adapters.mongo_schema import EVENTS, RELAY_STATE, UNPUBLISHED_INDEX, Document
from command_api.adapters.mongo_unit_of_work import IN_CHUNK, chunked
from events.envelope import utc_now

log = logging.getLogger(__name__)

RESUME_TOKEN_ID = "relay_resume_token"  # noqa: S105 - a document id, not a secret
IN_ORDER = [("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)]
# Unpublished, and not set aside as unpublishable (the partial index on published=False serves it).
UNPUBLISHED: Document = {"published": False, "quarantine": {"$exists": False}}
STREAM_WAIT_MS = 250
# The saved resume token only spares a restarted relay some replay (the published flags and the
# catch-up scan are what guarantee no gap), so it is written now and then, not per batch.
TOKEN_SAVE_SECONDS = 5.0
# MongoDB's codes for a stream that cannot resume where it was: ChangeStreamHistoryLost, and
# ChangeStreamFatalError (e.g. "resume token was not found").
HISTORY_LOST_CODES = frozenset({286, 280})

HistoryLost = Callable[[str], None]
# A change from the stream, and when it arrived (the feed's clock).
Arrival = tuple[float, Document]


def is_history_lost(exc: OperationFailure) -> bool:
    return exc.code in HISTORY_LOST_CODES or "resume" in str(exc).lower()


class ChangeFeed:
    """`async with feed:` opens the stream; then `changes()` and `scan_page()`. One per relay."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        batch_size: int,
        on_history_lost: HistoryLost,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        majority = ReadConcern("majority")
        self._events = db.get_collection(EVENTS, read_concern=majority)
        self._state = db[RELAY_STATE]
        self._client = db.client
        self._batch_size = batch_size
        self._on_history_lost = on_history_lost
        self._stream: AsyncCollectionChangeStream[Document] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._clock = clock
        # Each change with the time it arrived (what the relay's linger decides on).
        self._queue: asyncio.Queue[Arrival | BaseException] = asyncio.Queue(maxsize=batch_size)
        self._failure: BaseException | None = None
        self._token_saved_at = 0.0
        self._saving: asyncio.Task[None] | None = None
        # MongoDB's cluster time when the last catch-up scan found nothing left: an insert the
        # stream reports after it cannot have been published by a scan.
        self._scanned_until: Timestamp | None = None
        # When the newest change handed out arrived; and, for the first change `changes()` last
        # returned, how long after the change before it (None: the first since the stream opened).
        self._last_arrival: float | None = None
        self.arrival_gap: float | None = None

    async def __aenter__(self) -> ChangeFeed:
        self._scanned_until = None
        self._failure = None
        self._last_arrival = self.arrival_gap = None
        self._queue = asyncio.Queue(maxsize=self._batch_size)
        self._stream = await self._open_stream()
        self._reader = asyncio.create_task(self._read(self._stream), name="relay-change-stream")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
        saving, self._saving = self._saving, None
        if saving is not None:
            await asyncio.gather(saving, return_exceptions=True)

    async def _open_stream(self) -> AsyncCollectionChangeStream[Document]:
        pipeline: list[dict[str, Any]] = [{"$match": {"operationType": "insert"}}]
        saved = await self._state.find_one({"_id": RESUME_TOKEN_ID})
        if saved is not None:
            try:
                return await self._events.watch(
                    pipeline, resume_after=saved["token"], max_await_time_ms=STREAM_WAIT_MS
                )
            except OperationFailure as exc:
                # Too old or unusable: the catch-up scan after this open covers what lies between.
                await self._history_lost(exc)
        return await self._events.watch(pipeline, max_await_time_ms=STREAM_WAIT_MS)

    async def _history_lost(self, exc: OperationFailure) -> None:
        reason = f"code {exc.code}: {exc}"
        log.error(
            "ALERT: the change stream cannot resume from its saved position (%s); falling back to "
            "a full scan of unpublished events",
            reason,
        )
        self._on_history_lost(reason)
        await self._state.delete_one({"_id": RESUME_TOKEN_ID})

    async def _read(self, stream: AsyncCollectionChangeStream[Document]) -> None:
        """Keep one getMore outstanding and queue what it brings (the queue bounds the read-ahead)."""
        try:
            while True:
                change = await stream.try_next()
                if change is not None:
                    await self._queue.put((self._clock(), change))
                elif not stream.alive:
                    raise OperationFailure("the change stream was closed by the server")
        except asyncio.CancelledError:
            raise
        except OperationFailure as exc:
            if is_history_lost(exc):
                await self._history_lost(exc)
            await self._queue.put(exc)
        except BaseException as exc:
            await self._queue.put(exc)

    async def changes(self, wait_seconds: float) -> list[Document]:
        """Every change already arrived (up to the batch size), waiting at most `wait_seconds`
        for the first one. Under load the reader gets ahead, so batches grow by themselves.
        A failure of the stream is raised after the changes that came before it."""
        if self._failure is not None:
            raise self._failure
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that lands as
        # the get ends, and the relay's loop then runs on past its stop (a 300 s test hang).
        try:
            async with asyncio.timeout(wait_seconds):
                item: Arrival | BaseException | None = await self._queue.get()
        except TimeoutError:
            return []
        changes: list[Document] = []
        while item is not None:
            if isinstance(item, BaseException):
                self._failure = item
                if not changes:
                    raise item
                break
            if not changes:
                self.arrival_gap = None if self._last_arrival is None else item[0] - self._last_arrival
            changes.append(self._taken(item))
            if len(changes) >= self._batch_size:
                break
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                item = None
        return changes

    def arrived(self, limit: int) -> list[Document]:
        """The changes already queued, up to `limit`, without waiting; a failure of the stream
        among them is raised by the next `changes()`, after these."""
        found: list[Document] = []
        while len(found) < limit and self._failure is None:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if isinstance(item, BaseException):
                self._failure = item
            else:
                found.append(self._taken(item))
        return found

    def _taken(self, arrival: Arrival) -> Document:
        """The change, handed out: the next batch's gap is measured from its arrival."""
        self._last_arrival, change = arrival
        return change

    async def remember_position(self) -> None:
        """Save the stream's resume token when due, beside the publishing (a busy server answers
        slowly, and the publishing loop must not wait on it). A save that fails is logged and
        tried again at the next: the token only spares a restarted relay some replay."""
        stream = self._stream
        token = stream.resume_token if stream is not None else None
        if token is None or time.monotonic() - self._token_saved_at < TOKEN_SAVE_SECONDS:
            return
        if self._saving is not None and not self._saving.done():
            return
        self._token_saved_at = time.monotonic()
        self._saving = asyncio.create_task(self._save(token), name="relay-resume-token")

    async def _save(self, token: Any) -> None:
        try:
            await self._state.update_one(
                {"_id": RESUME_TOKEN_ID}, {"$set": {"token": token, "saved_at": utc_now()}}, upsert=True
            )
        except PyMongoError as exc:
            self._token_saved_at = 0.0
            log.warning("resume token not saved (tried again shortly): %s", exc)

    async def scan_page(self) -> list[Document]:
        """The first page of unpublished events, in aggregate/version order; an empty page
        records the cluster time the scan found the log fully published at."""
        async with self._client.start_session() as session:
            page = (
                # Hinted: SecantusDB's planner does not pick the partial index by itself, and
                # read the whole events log for each page.
                await self._events.find(UNPUBLISHED, session=session, hint=UNPUBLISHED_INDEX)
                .sort(IN_ORDER)
                .limit(self._batch_size)
                .to_list()
            )
            if not page:
                self._scanned_until = session.operation_time
        return page

    def forget_scan(self) -> None:
        self._scanned_until = None

    async def not_yet_published(self, changes: list[Document]) -> list[Document]:
        """The inserted events, less any a catch-up scan published; in aggregate/version order."""
        documents = [change.get("fullDocument") for change in changes]
        since = self._scanned_until
        after_last_scan = since is not None and all(
            isinstance(change.get("clusterTime"), Timestamp) and change["clusterTime"] > since
            for change in changes
        )
        if after_last_scan and all(d is not None for d in documents):
            return sorted((d for d in documents if d is not None), key=_in_order)
        # A restarted stream replays from the saved token, and a scan may have published these.
        # Read by id alone, `IN_CHUNK` ids a query, and the unpublished ones kept here: with any
        # other condition beside the ids SecantusDB scanned the whole log, matching each event
        # against the whole list (a tenth of its samples at 100/s).
        ids = [change["documentKey"]["_id"] for change in changes]
        found: list[Document] = []
        for part in chunked(ids, IN_CHUNK):
            found.extend(await self._events.find({"_id": {"$in": list(part)}}).to_list())
        return sorted((d for d in found if _unpublished(d)), key=_in_order)


def _unpublished(document: Document) -> bool:
    """What `UNPUBLISHED` selects."""
    return document.get("published") is False and "quarantine" not in document


def _in_order(document: Document) -> tuple[Any, Any]:
    return document["aggregate_id"], document["aggregate_version"]
