"""The MongoDB events log as a replay source: authoritative, read in (aggregate_id, version) order.

The first pass streams every event of the wanted aggregate types along the unique
(aggregate_id, aggregate_version) index, so each aggregate's events come together and in
order. A later pass scans the same index for (id, version) alone and fetches only the events
newer than what was read for their aggregate. An index scan started after a moment sees every
event committed before it, which is what the pass after the swap relies on; a change stream
would not say when it has delivered everything up to a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from events import EventEnvelope, InvalidEvent, from_log_document
from projectors.replay.domain.seen_versions import SeenVersions

Document = dict[str, Any]

IN_ORDER = [("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)]
# Cursor batches: large, as SecantusDB (a Python server) pays per round trip.
CURSOR_BATCH = 5000
FETCH_CHUNK = 1000


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
    ) -> None:
        self.collection = collection
        self.aggregate_types = sorted(set(aggregate_types))
        self.filter: Document = {"aggregate_type": {"$in": self.aggregate_types}}
        self.batch_size = batch_size
        self.seen = SeenVersions()
        self.invalid = 0
        self._passes = 0

    async def sizes(self) -> dict[str, int]:
        counts = self.collection.aggregate([{"$group": {"_id": "$aggregate_type", "events": {"$sum": 1}}}])
        return {row["_id"]: row["events"] async for row in await counts}

    async def next_pass(self) -> _MongoPass:
        self._passes += 1
        if self._passes == 1:
            sizes = await self.sizes()
            expected = sum(sizes.get(kind, 0) for kind in self.aggregate_types)
            return _MongoPass(self._everything(), expected)
        ids = await self._new_event_ids()
        return _MongoPass(self._fetch(ids), len(ids))

    async def _everything(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        cursor = self.collection.find(self.filter, batch_size=CURSOR_BATCH).sort(IN_ORDER)
        async for documents in _read_ahead(cursor, self.batch_size):
            yield self._decode(documents)

    async def _new_event_ids(self) -> list[str]:
        cursor = self.collection.find(
            self.filter, {"_id": 1, "aggregate_id": 1, "aggregate_version": 1}, batch_size=CURSOR_BATCH
        ).sort(IN_ORDER)
        return [d["_id"] async for d in cursor if self.seen.is_new(d["aggregate_id"], d["aggregate_version"])]

    async def _fetch(self, ids: list[str]) -> AsyncIterator[Sequence[EventEnvelope]]:
        # `ids` are in index order; each chunk sorted the same way keeps that order overall.
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[start : start + FETCH_CHUNK]
            documents = await self.collection.find({"_id": {"$in": chunk}}).sort(IN_ORDER).to_list()
            yield self._decode(documents)

    def _decode(self, documents: Sequence[Document]) -> list[EventEnvelope]:
        envelopes = []
        for document in documents:
            self.seen.record(document["aggregate_id"], document["aggregate_version"])
            try:
                envelopes.append(from_log_document(document))
            except InvalidEvent:
                self.invalid += 1
        return envelopes


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
