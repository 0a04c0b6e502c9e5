"""The outbox relay's view of the `events` collection: new inserts from a change stream, its
watermark (how far it has published), and the scan of the log when there is no position to
resume from.

The watermark (events/log.py) is the stream's resume token after the last event Kafka committed,
with the newest `recorded_at` among the events published. It is saved about once a second and
when the relay stops, only ever for events already in Kafka, so a relay that starts again resumes
right after them: a crash sends at most a second of events twice, never skips one. No event
document is rewritten to say it was published (those marks were a quarter of the MongoDB
server's CPU per command).

A reader task keeps one getMore outstanding and queues what each brings, so the publishing loop
takes every change already arrived at once, without waiting out a getMore's max await
(publishing and the next getMore overlap). Only public pymongo API is used: `try_next()` runs at
most one getMore.

When there is no position to resume from, the stream is opened anew and the log is scanned, in
aggregate/version order, by one cursor read a page at a time (pages of their own queries cost
SecantusDB the whole log each: it sorts before it limits):
- no watermark at all (a first start, or a log from a release that marked each event): every
  event not marked published by such a release;
- the stream cannot resume (its history is gone from the oplog: ChangeStreamHistoryLost, or the
  token is unknown or unusable): an alert is raised, and every event recorded since
  `relay_rescan_margin_seconds` before the newest the watermark held goes out again.
So nothing is skipped: the relay never just goes on "from now". An event inserted after the
stream opened and before the scan passed it is found by both: the feed remembers the ids of the
events the scan handed out that were recorded since shortly before the stream opened (few: the
backlog is older), and the stream's copies of those are not handed out again. That only spares
Kafka duplicates (the consumers drop them anyway): past its bound, or once the stream has been
quiet, the feed forgets and a copy goes out twice at worst.

Reads use read concern majority: an event a failover could roll back is never published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.change_stream import AsyncCollectionChangeStream
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern

from command_api.adapters.mongo_schema import EVENTS, IN_ORDER_INDEX, RELAY_STATE, Document
from events.envelope import utc_now
from events.log import WATERMARK_ID, read_watermark

log = logging.getLogger(__name__)

IN_ORDER = [("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)]
# What a scan publishes: not marked published by a release before the watermark, and not set
# aside as unpublishable.
NOT_PUBLISHED: Document = {"published": {"$ne": True}, "quarantine": {"$exists": False}}
STREAM_WAIT_MS = 250
# The watermark is saved this often while the relay publishes (and when it stops or goes idle):
# what a crash can send twice.
WATERMARK_SAVE_SECONDS = 1.0
# MongoDB's codes for a stream that cannot resume where it was: ChangeStreamHistoryLost, and
# ChangeStreamFatalError (e.g. "resume token was not found").
HISTORY_LOST_CODES = frozenset({286, 280})
# The scan remembers the events it handed out that were recorded since this long before the
# stream opened (the commands' clocks and transactions lag the server's a little), at most
# SCANNED_MAX of them, so that the stream does not hand them out a second time.
SCANNED_SLACK = timedelta(seconds=30)
SCANNED_MAX = 100_000

HistoryLost = Callable[[str], None]
# A change from the stream, and when it arrived (the feed's clock).
Arrival = tuple[float, Document]


def is_history_lost(exc: OperationFailure) -> bool:
    return exc.code in HISTORY_LOST_CODES or "resume" in str(exc).lower()


class ChangeFeed:
    """`async with feed:` opens the stream (after it, `scanning` says whether the log must be
    scanned first); then `changes()`, `scan_page()`, and the watermark's steps. One per relay."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        batch_size: int,
        on_history_lost: HistoryLost,
        rescan_margin_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        majority = ReadConcern("majority")
        self._db = db
        self._events = db.get_collection(EVENTS, read_concern=majority)
        self._state = db[RELAY_STATE]
        self._batch_size = batch_size
        self._on_history_lost = on_history_lost
        self._rescan_margin = timedelta(seconds=rescan_margin_seconds)
        self._stream: AsyncCollectionChangeStream[Document] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._clock = clock
        # Each change with the time it arrived (what the relay's linger decides on).
        self._queue: asyncio.Queue[Arrival | BaseException] = asyncio.Queue(maxsize=batch_size)
        self._failure: BaseException | None = None
        # The watermark as this relay knows it: the stream's position after the last change
        # published (None: none it can resume from), the newest `recorded_at` published, and
        # whether it moved since it was last saved.
        self._token: Any | None = None
        self.recorded_through: datetime | None = None
        self._moved = False
        self._saved_at = 0.0
        self._saving: asyncio.Task[None] | None = None
        # The scan before the stream, while one is due: from where (None: the whole log), the
        # last (aggregate, version) it handed out, and where the stream opened.
        self.scanning = False
        self._scan_since: datetime | None = None
        self._scan: AsyncCursor[Document] | None = None
        self._scan_newest: datetime | None = None
        self._opened_at: Any | None = None
        # The ids of events the scan handed out that the stream may bring too, and the
        # `recorded_at` from which the scan remembers them.
        self._scanned: set[Any] = set()
        self._scanned_since: datetime | None = None
        # The stream's history is gone: its positions are no use to a restart.
        self._history_gone = False
        # When the newest change handed out arrived; and, for the first change `changes()` last
        # returned, how long after the change before it (None: the first since the stream opened).
        self._last_arrival: float | None = None
        self.arrival_gap: float | None = None
        self._first_arrival = 0.0

    async def __aenter__(self) -> ChangeFeed:
        self._failure = None
        self._last_arrival = self.arrival_gap = None
        self._queue = asyncio.Queue(maxsize=self._batch_size)
        self._scanned.clear()
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
        await self._close_scan()
        try:
            await self.save_position()
        except PyMongoError as error:
            log.warning("watermark not saved (the events since the last save go out again): %s", error)

    async def _open_stream(self) -> AsyncCollectionChangeStream[Document]:
        pipeline: list[dict[str, Any]] = [{"$match": {"operationType": "insert"}}]
        saved = await read_watermark(self._db)
        self._token = saved.token if saved else None
        self.recorded_through = saved.recorded_through if saved else None
        self._moved = self._history_gone = False
        if self._token is not None:
            try:
                stream = await self._events.watch(
                    pipeline, resume_after=self._token, max_await_time_ms=STREAM_WAIT_MS
                )
            except OperationFailure as exc:
                # Too old or unusable: the scan after this open covers what lies between.
                await self._history_lost(exc)
            else:
                self.scanning = False
                return stream
        opened_at = utc_now()
        stream = await self._events.watch(pipeline, max_await_time_ms=STREAM_WAIT_MS)
        # Everything after this position the stream brings; everything before it the scan does.
        self._opened_at = stream.resume_token
        self._scanned_since = opened_at - SCANNED_SLACK
        self.scanning = True
        self._scan_newest = None
        await self._close_scan()
        through = self.recorded_through
        self._scan_since = None if saved is None or through is None else through - self._rescan_margin
        return stream

    async def _history_lost(self, exc: OperationFailure) -> None:
        reason = f"code {exc.code}: {exc}"
        log.error(
            "ALERT: the change stream cannot resume from the relay's watermark (%s); events recorded "
            "since %s before the newest published go out again",
            reason,
            self._rescan_margin,
        )
        self._on_history_lost(reason)
        self._token, self._history_gone = None, True
        await self._state.update_one({"_id": WATERMARK_ID}, {"$unset": {"token": ""}})

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
            # Quiet: whatever the scan handed out that the stream was to bring has come.
            self._scanned.clear()
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
                self._first_arrival = item[0]
            change = self._taken(item)
            if not self._scanned_already(change):
                changes.append(change)
            if len(changes) >= self._batch_size:
                break
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                item = None
        return changes

    def waited(self) -> float:
        """How long ago the first change `changes()` last returned arrived."""
        return max(0.0, self._clock() - self._first_arrival)

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
            elif not self._scanned_already(change := self._taken(item)):
                found.append(change)
        return found

    def _scanned_already(self, change: Document) -> bool:
        """Whether the scan handed this change's event out already (each is skipped once)."""
        if not self._scanned:
            return False
        document = change.get("fullDocument") or {}
        try:
            self._scanned.remove(document.get("_id"))
        except KeyError:
            return False
        return True

    def _taken(self, arrival: Arrival) -> Document:
        """The change, handed out: the next batch's gap is measured from its arrival."""
        self._last_arrival, change = arrival
        return change

    async def scan_page(self) -> list[Document]:
        """The next page of the scan, in aggregate/version order (empty: the scan is done, and
        the watermark moves to where the stream opened)."""
        if self._scan is None:
            wanted: Document = dict(NOT_PUBLISHED)
            # The whole log: one walk of the unique index in order. Since a time: the index on
            # `recorded_at` finds the margin's events, sorted by the server, and no hint, which
            # on SecantusDB would walk the whole index under its storage lock (a margin of 10 of
            # 20,000 events: 628 ms hinted, 2 ms not).
            hint: str | None = IN_ORDER_INDEX
            if self._scan_since is not None:
                wanted["recorded_at"] = {"$gte": self._scan_since}
                hint = None
            self._scan = self._events.find(wanted, hint=hint, sort=IN_ORDER, batch_size=self._batch_size)
        page = await self._scan.to_list(self._batch_size)
        if page:
            self._remember_scanned(page)
            # Not the watermark's yet: a scan interrupted half way must be done again whole.
            newest = _newest(page)
            if newest is not None and (self._scan_newest is None or newest > self._scan_newest):
                self._scan_newest = newest
        else:
            await self._close_scan()
            self.scanning = False
            self._token, self._moved = self._opened_at, True
            self._through(self._scan_newest)
        return page

    def _remember_scanned(self, page: list[Document]) -> None:
        """The events of this page the stream may bring too: those recorded since shortly before
        it opened (up to SCANNED_MAX; past it, the stream's copies go out again)."""
        since = self._scanned_since
        if since is None:
            return
        for document in page:
            recorded = document.get("recorded_at")
            if not isinstance(recorded, datetime) or len(self._scanned) >= SCANNED_MAX:
                continue
            if recorded.tzinfo is None:  # a client without tz_aware
                recorded = recorded.replace(tzinfo=UTC)
            if recorded >= since and (event_id := document.get("_id")) is not None:
                self._scanned.add(event_id)

    async def _close_scan(self) -> None:
        scan, self._scan = self._scan, None
        if scan is not None:
            await scan.close()

    def published(self, changes: list[Document]) -> None:
        """These changes (the oldest not yet published first) are in Kafka."""
        if changes:
            if not self._history_gone:
                self._token, self._moved = changes[-1]["_id"], True
            self._through(_newest([c["fullDocument"] for c in changes if c.get("fullDocument")]))

    def caught_up(self) -> None:
        """Nothing waits to be published: the watermark follows the stream's own position, so a
        quiet log still leaves a recent one (its history stays in the oplog)."""
        stream = self._stream
        if stream is None or self.scanning or self._history_gone or not self._queue.empty():
            return
        token = stream.resume_token
        if token is not None and token != self._token:
            self._token, self._moved = token, True

    def _through(self, newest: datetime | None) -> None:
        if newest is not None and (self.recorded_through is None or newest > self.recorded_through):
            self.recorded_through, self._moved = newest, True

    async def remember_position(self) -> None:
        """Save the watermark when due, beside the publishing (a busy server answers slowly,
        and the publishing loop must not wait on it). A save that fails is logged and tried
        again at the next: until then a restart sends a little more again."""
        if not self._moved or self._clock() - self._saved_at < WATERMARK_SAVE_SECONDS:
            return
        if self._saving is not None and not self._saving.done():
            return
        self._saving = asyncio.create_task(self._save_quietly(), name="relay-watermark")

    async def save_position(self) -> None:
        """The watermark saved now (after a save under way)."""
        saving, self._saving = self._saving, None
        if saving is not None:
            await asyncio.gather(saving, return_exceptions=True)
        if self._moved:
            await self._save()

    async def _save_quietly(self) -> None:
        try:
            await self._save()
        except PyMongoError as exc:
            log.warning("watermark not saved (tried again shortly): %s", exc)

    async def _save(self) -> None:
        # Only a position whose events are all in Kafka is ever saved, by whichever relay; and
        # never one behind the saved one (a deposed relay stopping, say, after the relay that
        # took over from it had caught up): it would only make a restart send more again.
        self._saved_at = self._clock()
        self._moved = False
        through = self.recorded_through
        fields = {"recorded_through": through, "saved_at": utc_now()}
        change: Document = {"$set": {**fields, "token": self._token}}
        if self._token is None:
            change = {"$set": fields, "$unset": {"token": ""}}
        behind: list[Document] = [{"recorded_through": None}]
        if through is not None:
            behind.append({"recorded_through": {"$lte": through}})
        try:
            await self._state.update_one({"_id": WATERMARK_ID, "$or": behind}, change, upsert=True)
        except DuplicateKeyError:
            pass  # a newer watermark is saved: it stays
        except BaseException:
            self._moved = True
            raise


def _newest(documents: list[Document]) -> datetime | None:
    """The newest `recorded_at` among these events (None if none has one)."""
    recorded = [d["recorded_at"] for d in documents if isinstance(d.get("recorded_at"), datetime)]
    return max(recorded, default=None)
