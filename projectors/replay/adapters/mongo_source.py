"""The MongoDB events log as a replay source: authoritative, read in (aggregate_id, version) order.

The first pass streams every event of the wanted aggregate types along the unique
(aggregate_id, aggregate_version) index, so each aggregate's events come together and in
order. After it, two ways to find what is new:

- a change stream on the collection, opened before the first pass: cheap, so the catch-up
  passes before the swap use it alone; but a stream cannot say when it has delivered every
  insert committed before a given moment;
- the same ordered index scan again, keeping only events newer than what was read for their
  aggregate: it costs a scan of the whole log, but a scan started after a moment sees every
  event committed before it. An exact pass (the one after the swap) therefore drains the
  stream first (so most of what is new is applied at once) and then scans.

Without change streams (a MongoDB that is not a replica set) every pass scans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, get_args

from pymongo import ASCENDING
from pymongo.asynchronous.change_stream import AsyncCollectionChangeStream
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from events import EventEnvelope, InvalidEvent, from_log_document
from events.envelope import AggregateType
from projectors.replay.adapters.seen_spill import SpilledSeenVersions
from projectors.replay.domain.seen_versions import SeenVersionStore

log = logging.getLogger(__name__)

Document = dict[str, Any]

IN_ORDER = [("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)]
# Cursor batches: large, as SecantusDB (a Python server) pays per round trip.
CURSOR_BATCH = 5000
STREAM_WAIT_MS = 100
# A drain stops when the stream is quiet, or after this long under a steady flow of inserts.
STREAM_DRAIN_SECONDS = 2.0


@dataclass
class _MongoPass:
    batches_of: AsyncIterator[Sequence[EventEnvelope]]
    expected: int | None

    def batches(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        return self.batches_of


class MongoEventSource:
    name = "mongo"

    def __init__(
        self,
        collection: AsyncCollection[Document],
        aggregate_types: Iterable[str],
        batch_size: int = 1000,
        seen: SeenVersionStore | None = None,
    ) -> None:
        self.collection = collection
        self.aggregate_types = frozenset(aggregate_types)
        # A filter the server must evaluate slows its ordered scan; only ask for one if needed.
        everything = self.aggregate_types >= frozenset(get_args(AggregateType))
        self.filter: Document = (
            {} if everything else {"aggregate_type": {"$in": sorted(self.aggregate_types)}}
        )
        self.batch_size = batch_size
        # What was read per aggregate, out of memory: the replay's memory must not grow with the log.
        self.seen: SeenVersionStore = seen if seen is not None else SpilledSeenVersions()
        self.invalid = 0
        self._passes = 0
        self._stream: AsyncCollectionChangeStream[Document] | None = None

    async def __aenter__(self) -> MongoEventSource:
        pipeline: list[Document] = [{"$match": {"operationType": "insert"}}]
        if self.filter:
            pipeline = [
                {
                    "$match": {
                        "operationType": "insert",
                        "fullDocument.aggregate_type": self.filter["aggregate_type"],
                    }
                }
            ]
        try:
            self._stream = await self.collection.watch(pipeline, max_await_time_ms=STREAM_WAIT_MS)
        except PyMongoError as exc:
            log.warning("no change stream (%s): every catch-up pass scans the whole log", exc)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._stream is not None:
                await self._stream.close()
        finally:
            self.seen.close()

    async def sizes(self) -> dict[str, int]:
        counts = self.collection.aggregate([{"$group": {"_id": "$aggregate_type", "events": {"$sum": 1}}}])
        return {row["_id"]: row["events"] async for row in await counts}

    async def _first_pass_size(self) -> int:
        if not self.filter:
            # Every event is wanted: the collection's own count, kept by the server, costs no scan.
            return await self.collection.estimated_document_count()
        sizes = await self.sizes()
        return sum(sizes.get(kind, 0) for kind in self.aggregate_types)

    async def next_pass(self, exact: bool = True) -> _MongoPass:
        self._passes += 1
        if self._passes == 1:
            return _MongoPass(self._scan(), await self._first_pass_size())
        if exact or self._stream is None:
            return _MongoPass(self._drain_then_scan(), None)
        return _MongoPass(self._drain(), None)

    async def _scan(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        """The log in index order; only events newer than what was read for their aggregate."""
        cursor = self.collection.find(self.filter, batch_size=CURSOR_BATCH).sort(IN_ORDER)
        async for documents in _read_ahead(cursor, self.batch_size):
            envelopes = self._decode_new(documents)
            if envelopes:
                yield envelopes

    async def _drain(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        """What the change stream holds now (inserts in commit order, so per aggregate in order)."""
        if self._stream is None:
            return
        began = datetime.now(UTC)
        deadline = time.monotonic() + STREAM_DRAIN_SECONDS
        batch: list[Document] = []
        while time.monotonic() < deadline:
            change = await self._stream.try_next()
            if change is None:
                break
            batch.append(change["fullDocument"])
            if len(batch) >= self.batch_size:
                yield self._decode_new(batch)
                batch = []
            if _committed_after(change, began):
                break  # the end as of the pass's start: under steady writes a drain still ends
        if batch:
            yield self._decode_new(batch)

    async def _drain_then_scan(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        async for envelopes in self._drain():
            yield envelopes
        async for envelopes in self._scan():
            yield envelopes

    def _decode_new(self, documents: Sequence[Document]) -> list[EventEnvelope]:
        wanted = [d for d in documents if d["aggregate_type"] in self.aggregate_types]
        newer = self.seen.keep_newer([(d["aggregate_id"], d["aggregate_version"]) for d in wanted])
        envelopes = []
        for document, new in zip(wanted, newer, strict=True):
            if not new:
                continue
            try:
                envelopes.append(from_log_document(document))
            except InvalidEvent:
                self.invalid += 1
        return envelopes


def _committed_after(change: Document, moment: datetime) -> bool:
    wall = change.get("wallTime")
    if not isinstance(wall, datetime):
        return False
    return (wall if wall.tzinfo else wall.replace(tzinfo=UTC)) > moment


async def _read_ahead(cursor: AsyncIterator[Document], size: int) -> AsyncIterator[list[Document]]:
    """Lists of `size` documents, the next one read while the caller works on the current one."""
    queue: asyncio.Queue[list[Document] | None] = asyncio.Queue(maxsize=2)

    async def read() -> None:
        try:
            batch: list[Document] = []
            async for document in cursor:
                batch.append(document)
                if len(batch) >= size:
                    await queue.put(batch)
                    batch = []
            if batch:
                await queue.put(batch)
        except Exception:
            await queue.put(None)  # wakes the caller, which then meets the error awaiting the reader
            raise
        await queue.put(None)

    reader = asyncio.create_task(read(), name="mongo-read-ahead")
    try:
        while (batch := await queue.get()) is not None:
            yield batch
        await reader
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
