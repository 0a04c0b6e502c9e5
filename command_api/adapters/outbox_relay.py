"""The outbox relay: every event recorded in MongoDB reaches Kafka, in order per aggregate.

It tails the `events` collection through a change stream whose resume token is persisted, and
scans for unpublished events at start. An event is marked published only after Kafka
acknowledged it, so a crash at any point leads to duplicates at worst, never to a gap.

Every MongoDB operation counts (a local SecantusDB serves the command API too), so the stream's
changes are published as soon as a getMore brought them, straight from the inserted documents;
the published marks are written a few times a second, the resume token every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from bson import Timestamp
from prometheus_client import Counter, Gauge
from pymongo import ASCENDING
from pymongo.asynchronous.change_stream import AsyncCollectionChangeStream
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError
from redis.exceptions import RedisError

from command_api.adapters.kafka_publisher import KafkaEventPublisher, PublishInterrupted
from command_api.adapters.mongo_schema import EVENTS, RELAY_STATE, Document, IndexGate
from command_api.adapters.relay_lease import LeaseLost, RelayLease
from events import EventEnvelope, from_log_document
from events.envelope import utc_now, utc_text
from readmodels.keyspace import relay_status_key

log = logging.getLogger(__name__)

RESUME_TOKEN_ID = "relay_resume_token"  # noqa: S105 - a document id, not a secret
IN_ORDER = [("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)]
STREAM_WAIT_MS = 250
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
STATUS_INTERVAL_SECONDS = 2.0
# The saved resume token only spares a restarted relay some replay (the published flags and the
# catch-up scan are what guarantee no gap), so it is written now and then, not per batch.
TOKEN_SAVE_SECONDS = 5.0
# Marks of events published from the stream wait this long to be written in one update; a relay
# that dies first sends them again at restart (a duplicate, never a gap).
MARK_INTERVAL_SECONDS = 0.2
# While the stream is quiet, rescan now and then: a safety net should a stream ever skip an
# insert (the scan is one indexed query; it finds nothing when all is well).
IDLE_RESCAN_SECONDS = 15.0

# Labelled, so nothing is created at import (prometheus multiprocess mode writes files then).
PUBLISHED = Counter(
    "relay_events_published_total", "Events the outbox relay published to Kafka", ["aggregate_type"]
)
PUBLISH_FAILURES = Counter(
    "relay_publish_failures_total", "Publish attempts Kafka did not acknowledge", ["relay"]
)
BACKLOG = Gauge(
    "relay_backlog_events", "Events in MongoDB not yet published", ["relay"], multiprocess_mode="livemax"
)
LEASE_HELD = Gauge(
    "relay_lease_held",
    "1 while this relay holds the publishing lease",
    ["relay"],
    multiprocess_mode="livemax",
)


class OutboxRelay:
    def __init__(
        self,
        *,
        db: AsyncDatabase[Document],
        gate: IndexGate,
        lease: RelayLease,
        publisher: KafkaEventPublisher,
        redis: aioredis.Redis | None,
        redis_prefix: str,
        batch_size: int,
    ) -> None:
        self._db = db
        self._events = db[EVENTS]
        self._state = db[RELAY_STATE]
        self._gate = gate
        self._lease = lease
        self._publisher = publisher
        self._redis = redis
        self._status_key = relay_status_key(redis_prefix)
        self._batch_size = batch_size
        self.published_total = 0
        self.last_published_at: datetime | None = None
        self._token_saved_at = 0.0
        # Published from the stream, acknowledged by Kafka, not yet marked in MongoDB.
        self._unmarked: list[str] = []
        self._marked_at = 0.0
        # MongoDB's cluster time when the last catch-up scan found nothing left: an insert the
        # stream reports after it cannot have been published by a scan.
        self._scanned_until: Timestamp | None = None

    @property
    def holder(self) -> str:
        return self._lease.holder

    @property
    def lease(self) -> RelayLease:
        return self._lease

    async def run(self) -> None:
        """Publish while holding the lease, wait while another relay does; until cancelled."""
        keeper = asyncio.create_task(self._lease.keep(), name="relay-lease")
        reporter = asyncio.create_task(self._report_status(), name="relay-status")
        backoff = FIRST_BACKOFF_SECONDS
        try:
            while True:
                await self._lease.wait_until_held()
                try:
                    await self._gate.ensure()
                    await self._relay_while_held()
                except LeaseLost as exc:
                    log.warning("%s; publishing stops until the lease is back", exc)
                except PyMongoError as exc:
                    log.warning("MongoDB error in the relay, starting over in %.1f s: %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                else:
                    backoff = FIRST_BACKOFF_SECONDS
        finally:
            for task in (keeper, reporter):
                task.cancel()
            await asyncio.gather(keeper, reporter, return_exceptions=True)
            await asyncio.shield(self._shut_down())

    async def _shut_down(self) -> None:
        LEASE_HELD.labels(self.holder).set(0)
        try:
            await self._write_marks()
        except PyMongoError as exc:
            log.warning("published marks not written (those events will be sent again): %s", exc)
        await self._publisher.close()
        try:
            await self._lease.release()
        except PyMongoError as exc:
            log.warning("could not release the lease (it will expire): %s", exc)

    async def _relay_while_held(self) -> None:
        # The stream is opened before the scan: whatever the scan does not see, the stream will.
        self._scanned_until = None
        stream = await self._open_stream()
        async with stream:
            await self._catch_up()
            scanned_at = time.monotonic()
            while True:
                self._lease.ensure_held()
                changes = await self._next_changes(stream)
                if changes:
                    await self._publish(await self._not_yet_published(changes), mark_now=False)
                elif time.monotonic() - scanned_at > IDLE_RESCAN_SECONDS:
                    await self._catch_up()
                    scanned_at = time.monotonic()
                await self._mark_when_due(idle=not changes)
                await self._remember_position(stream)

    async def _open_stream(self) -> AsyncCollectionChangeStream[Document]:
        pipeline: list[dict[str, Any]] = [{"$match": {"operationType": "insert"}}]
        saved = await self._state.find_one({"_id": RESUME_TOKEN_ID})
        if saved is not None:
            try:
                return await self._events.watch(
                    pipeline, resume_after=saved["token"], max_await_time_ms=STREAM_WAIT_MS
                )
            except OperationFailure as exc:
                # Too old or unusable: the catch-up scan covers whatever lies in between.
                log.warning("cannot resume the change stream (%s); starting from now", exc)
                await self._state.delete_one({"_id": RESUME_TOKEN_ID})
        return await self._events.watch(pipeline, max_await_time_ms=STREAM_WAIT_MS)

    async def _catch_up(self) -> None:
        # Events published but not yet marked would be found (and sent) again.
        await self._write_marks()
        while True:
            self._lease.ensure_held()
            async with self._db.client.start_session() as session:
                batch = (
                    await self._events.find({"published": False}, session=session)
                    .sort(IN_ORDER)
                    .limit(self._batch_size)
                    .to_list()
                )
                if not batch:
                    # Every event this catch-up published committed before this last scan began.
                    self._scanned_until = session.operation_time
                    return
            log.info("catch-up: publishing %d unpublished events", len(batch))
            await self._publish(batch)

    async def _next_changes(self, stream: AsyncCollectionChangeStream[Document]) -> list[Document]:
        """The changes one getMore brings: published at once, with no window to wait out.

        Under load the next getMore finds what arrived meanwhile, so batches grow by themselves.
        """
        changes: list[Document] = []
        first = await stream.try_next()
        if first is None:
            return changes
        changes.append(first)
        while len(changes) < self._batch_size and _buffered(stream):
            change = await stream.try_next()
            if change is None:
                break
            changes.append(change)
        return changes

    async def _not_yet_published(self, changes: list[Document]) -> list[Document]:
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
        ids = [change["documentKey"]["_id"] for change in changes]
        return await self._events.find({"_id": {"$in": ids}, "published": False}).sort(IN_ORDER).to_list()

    async def _mark_when_due(self, *, idle: bool) -> None:
        if not self._unmarked:
            return
        due = time.monotonic() - self._marked_at >= MARK_INTERVAL_SECONDS
        if idle or due or len(self._unmarked) >= self._batch_size:
            await self._write_marks()

    async def _write_marks(self) -> None:
        if not self._unmarked:
            return
        ids = self._unmarked
        await self._events.update_many(
            {"_id": {"$in": ids}}, {"$set": {"published": True, "published_at": utc_now()}}
        )
        del self._unmarked[: len(ids)]
        self._marked_at = time.monotonic()

    async def _remember_position(self, stream: AsyncCollectionChangeStream[Document]) -> None:
        token = stream.resume_token
        if token is None:
            return
        if time.monotonic() - self._token_saved_at < TOKEN_SAVE_SECONDS:
            return
        await self._state.update_one(
            {"_id": RESUME_TOKEN_ID}, {"$set": {"token": token, "saved_at": utc_now()}}, upsert=True
        )
        self._token_saved_at = time.monotonic()

    async def _publish(self, documents: list[Document], *, mark_now: bool = True) -> None:
        """Publish these (in aggregate/version order) until Kafka acknowledged every one.

        Marked published at once, or (`mark_now=False`) with the next write of the marks."""
        pending: list[EventEnvelope] = [from_log_document(d) for d in documents]
        backoff = FIRST_BACKOFF_SECONDS
        while pending:
            self._lease.ensure_held()
            try:
                acknowledged = await self._publisher.publish(pending, self._lease.ensure_held)
                failure: PublishInterrupted | None = None
            except PublishInterrupted as exc:
                acknowledged, failure = exc.acknowledged, exc
            if acknowledged:
                await self._published(pending, acknowledged, mark_now=mark_now)
            if failure is None:
                return
            if isinstance(failure.cause, LeaseLost):
                raise failure.cause
            done = set(acknowledged)
            pending = [e for e in pending if str(e.event_id) not in done]
            PUBLISH_FAILURES.labels(self.holder).inc()
            log.warning(
                "Kafka did not take %d events (%s); retrying in %.1f s", len(pending), failure.cause, backoff
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _published(
        self, envelopes: list[EventEnvelope], acknowledged: list[str], *, mark_now: bool
    ) -> None:
        now = utc_now()
        if mark_now:
            await self._events.update_many(
                {"_id": {"$in": acknowledged}}, {"$set": {"published": True, "published_at": now}}
            )
        else:
            self._unmarked.extend(acknowledged)
        done = set(acknowledged)
        for envelope in envelopes:
            if str(envelope.event_id) in done:
                PUBLISHED.labels(envelope.aggregate_type).inc()
        self.published_total += len(acknowledged)
        self.last_published_at = now

    async def status(self) -> dict[str, Any]:
        """What the monitor shows: backlog, who holds the lease, when this relay last published."""
        return {
            "relay": self.holder,
            "holds_lease": self._lease.held,
            "lease_holder": await self._lease.current_holder(),
            # Published but not yet marked is no backlog.
            "backlog": max(0, await self._events.count_documents({"published": False}) - len(self._unmarked)),
            "published_total": self.published_total,
            "last_published_at": utc_text(self.last_published_at) if self.last_published_at else None,
            "updated_at": utc_text(utc_now()),
        }

    async def _report_status(self) -> None:
        while True:
            LEASE_HELD.labels(self.holder).set(1 if self._lease.held else 0)
            # Only the publishing relay reports; with none publishing, the key expires.
            if self._lease.held:
                try:
                    status = await self.status()
                    BACKLOG.labels(self.holder).set(status["backlog"])
                    if self._redis is not None:
                        await self._redis.set(
                            self._status_key,
                            orjson.dumps(status),
                            ex=int(STATUS_INTERVAL_SECONDS * 3),
                        )
                except (PyMongoError, RedisError) as exc:
                    log.warning("relay status not reported: %s", exc)
                except Exception:
                    log.exception("unexpected error reporting the relay status")
            await asyncio.sleep(STATUS_INTERVAL_SECONDS)


def _buffered(stream: AsyncCollectionChangeStream[Document]) -> bool:
    """Whether the stream holds changes its last getMore brought (pymongo has no public way to
    ask; try_next would send another getMore, which waits out the stream's max await)."""
    return bool(stream._cursor._has_next())


def _in_order(document: Document) -> tuple[Any, Any]:
    return document["aggregate_id"], document["aggregate_version"]
