"""The outbox relay: every event recorded in MongoDB reaches Kafka, in order per aggregate.

This module is its publishing loop; the change feed and its watermark (relay_change_feed.py),
the lease (relay_lease.py), the Kafka transactions (kafka_publisher.py) and the status
(relay_status.py) are its parts. While it holds the lease, it resumes the change stream right
after the last event it published (or, with no such position, opens it and scans the log page by
page first: a backlog of any size in bounded memory), then publishes what each getMore brings.
Each batch is one Kafka transaction, and the watermark passes its events only after the commit,
so a crash at any point leads to duplicates at worst, never to a gap.

An event Kafka can never take (it cannot be serialised, or is too large for the topic) is
quarantined: marked in MongoDB with the reason, counted and logged; the others go on. (A
projection that then misses that version fills the gap from the events log.)

When a newer relay's producer fenced this one's, or the lease is lost, the relay steps down: its
publishing loop ends, it logs, and it waits as a standby until it holds the lease again.

Every MongoDB operation counts (a local SecantusDB serves the command API too), so the stream's
changes are published as soon as a getMore brought them, straight from the inserted documents,
and the only write is the watermark's, about once a second, beside the publishing rather than
before the next batch (a busy server answers it slowly).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from command_api.adapters.kafka_publisher import (
    KafkaEventPublisher,
    Outgoing,
    ProducerFencedOut,
    PublishFailed,
    Unpublishable,
)
from command_api.adapters.mongo_schema import EVENTS, Document, IndexGate
from command_api.adapters.relay_change_feed import ChangeFeed
from command_api.adapters.relay_lease import LeaseLost, RelayLease
from command_api.adapters.relay_linger import linger
from command_api.adapters.relay_status import (
    FENCED,
    HISTORY_LOST,
    PUBLISH_FAILURES,
    PUBLISHED,
    QUARANTINED,
    RelayProgress,
    RelayStatusReporter,
)
from events import encode_event, from_log_document
from events.envelope import utc_now

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
STREAM_WAIT_SECONDS = 0.25


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
        linger_seconds: float = 0.0,
        rescan_margin_seconds: float = 300.0,
    ) -> None:
        self._events = db[EVENTS]
        self._gate = gate
        self._lease = lease
        self._publisher = publisher
        self._batch_size = batch_size
        self._linger_seconds = linger_seconds
        self.progress = RelayProgress()
        self._feed = ChangeFeed(
            db,
            batch_size=batch_size,
            on_history_lost=self._history_lost,
            rescan_margin_seconds=rescan_margin_seconds,
        )
        self._reporter = RelayStatusReporter(
            lease=lease,
            gate=gate,
            events=self._events,
            progress=self.progress,
            recorded_through=lambda: self._feed.recorded_through,
            redis=redis,
            redis_prefix=redis_prefix,
        )

    @property
    def holder(self) -> str:
        return self._lease.holder

    @property
    def lease(self) -> RelayLease:
        return self._lease

    @property
    def published_total(self) -> int:
        return self.progress.published_total

    @property
    def last_published_at(self) -> datetime | None:
        return self.progress.last_published_at

    async def status(self) -> dict[str, Any]:
        """What the monitor shows: backlog, who holds the lease, when this relay last published."""
        return await self._reporter.status()

    async def run(self) -> None:
        """Publish while holding the lease, wait while another relay does; until cancelled."""
        keeper = asyncio.create_task(self._lease.keep(), name="relay-lease")
        reporter = asyncio.create_task(self._reporter.run(), name="relay-status")
        backoff = FIRST_BACKOFF_SECONDS
        try:
            while True:
                await self._lease.wait_until_held()
                try:
                    await self._gate.ensure()
                    await self._relay_while_held()
                except LeaseLost as exc:
                    log.warning("%s; publishing stops until the lease is back", exc)
                except ProducerFencedOut as exc:
                    await self._step_down(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
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

    async def _step_down(self, exc: ProducerFencedOut) -> None:
        self.progress.fenced_total += 1
        FENCED.labels(self.holder).inc()
        log.warning(
            "relay %s (lease epoch %d) was fenced off Kafka by a newer relay (%s); it steps down "
            "and publishes nothing more until it holds the lease again",
            self.holder,
            self._lease.epoch,
            exc,
        )
        self._lease.step_down()
        await self._publisher.close()

    async def _shut_down(self) -> None:
        # (The feed saved its watermark as the publishing loop left it.)
        await self._publisher.close()
        try:
            await self._lease.release()
        except PyMongoError as exc:
            log.warning("could not release the lease (it will expire): %s", exc)

    async def _relay_while_held(self) -> None:
        # The stream is opened before any scan: whatever the scan does not see, the stream will.
        async with self._feed as feed:
            await self._catch_up()
            while True:
                self._lease.ensure_held()
                changes = await feed.changes(STREAM_WAIT_SECONDS)
                if (
                    changes
                    and len(changes) < self._batch_size
                    and (wait := linger(self._linger_seconds, feed.arrival_gap, feed.waited()))
                ):
                    # Changes keep coming: let the ones right behind the first join its
                    # transaction, up to one linger after it arrived (relay_linger.py).
                    await asyncio.sleep(wait)
                    changes += feed.arrived(self._batch_size - len(changes))
                if changes:
                    await self._publish(sorted((c["fullDocument"] for c in changes), key=_in_order))
                    feed.published(changes)
                else:
                    feed.caught_up()
                await feed.remember_position()

    async def _catch_up(self) -> None:
        """With no position to resume the stream from: publish what the scan finds, one page at
        a time (each page is published before the next is read, so memory holds one page
        whatever the backlog)."""
        while self._feed.scanning:
            self._lease.ensure_held()
            page = await self._feed.scan_page()
            if page:
                log.info("catch-up: publishing a page of %d events", len(page))
                await self._publish(page)
        await self._feed.save_position()

    async def _publish(self, documents: list[Document]) -> None:
        """Publish these (in aggregate/version order) in one transaction, retrying until Kafka
        committed them; quarantine any Kafka can never take."""
        pending = await self._serialised(documents)
        backoff = FIRST_BACKOFF_SECONDS
        while pending:
            self._lease.ensure_held()
            try:
                await self._publisher.publish(pending, self._lease.ensure_held)
            except Unpublishable as exc:
                await self._quarantine(exc.event_id, exc.reason)
                pending = [o for o in pending if str(o.envelope.event_id) != exc.event_id]
                continue
            except PublishFailed as failure:
                PUBLISH_FAILURES.labels(self.holder).inc()
                log.warning(
                    "Kafka did not take %d events (%s); retrying in %.1f s",
                    len(pending),
                    failure.cause,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self._published(pending)
            return

    async def _serialised(self, documents: list[Document]) -> list[Outgoing]:
        ready: list[Outgoing] = []
        for document in documents:
            try:
                envelope = from_log_document(document)
                ready.append(Outgoing(envelope, encode_event(envelope)))
            except Exception as exc:  # whatever the reason, this event can never be sent
                await self._quarantine(document["_id"], f"cannot be serialised: {exc}")
        return ready

    async def _quarantine(self, event_id: Any, reason: str) -> None:
        kind = "too_large" if "too large" in reason else "unserialisable"
        QUARANTINED.labels(kind).inc()
        self.progress.quarantined_total += 1
        log.error("ALERT: outbox event %s quarantined, it will not be published: %s", event_id, reason)
        await self._events.update_one(
            {"_id": event_id},
            {"$set": {"quarantine": {"reason": reason[:2000], "kind": kind, "at": utc_now()}}},
        )

    def _published(self, sent: list[Outgoing]) -> None:
        for outgoing in sent:
            PUBLISHED.labels(outgoing.envelope.aggregate_type).inc()
        self.progress.published_total += len(sent)
        self.progress.last_published_at = utc_now()

    def _history_lost(self, reason: str) -> None:
        self.progress.history_lost_total += 1
        self.progress.history_lost_at = utc_now()
        self.progress.history_lost_reason = reason
        HISTORY_LOST.labels(self.holder).inc()


def _in_order(document: Document) -> tuple[Any, Any]:
    return document["aggregate_id"], document["aggregate_version"]
