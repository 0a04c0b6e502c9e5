"""Filling the events log, running relays, and reading back what reached Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.kafka_publisher import ProducerFactory
from command_api.adapters.mongo_schema import Document
from command_api.adapters.outbox_relay import OutboxRelay
from command_api.bootstrap import build_outbox_relay
from events import EventEnvelope, Topics, decode_event, new_envelope, to_log_document
from events.envelope import utc_now
from events.log import relay_backlog
from service_runtime.settings import Settings
from tests.support.waiting import eventually

CREATED = {
    "owner_id": "owner",
    "name": "Spring",
    "channel": "email",
    "budget": {"amount": "10.00", "currency": "EUR"},
    "starts_at": "2027-03-01T00:00:00Z",
    "ends_at": "2027-03-31T00:00:00Z",
}


def log_documents(aggregate_id: str, versions: range) -> list[Document]:
    """Campaign events as the command side writes them to the `events` collection, each recorded
    a millisecond after the one before."""
    documents = []
    for version in versions:
        envelope = new_envelope(
            event_type="CampaignCreated" if version == 1 else "CampaignUpdated",
            aggregate_id=aggregate_id,
            aggregate_version=version,
            payload=CREATED if version == 1 else {"name": f"name {version}"},
            correlation_id=f"corr-{aggregate_id}-{version}",
        )
        documents.append(to_log_document(envelope))
    return recorded_in_order(documents)


def recorded_in_order(documents: list[Document]) -> list[Document]:
    """The events recorded in the order given, a millisecond apart (later than any before)."""
    global _last_recorded
    for document in documents:
        _last_recorded = max(_last_recorded + timedelta(milliseconds=1), utc_now())
        document["recorded_at"] = _last_recorded
    return documents


_last_recorded = datetime(2000, 1, 1, tzinfo=UTC)


def interleaved(aggregates: list[str], versions: range) -> list[Document]:
    """Version by version across aggregates, as concurrent commands would write them."""
    per_aggregate = {a: log_documents(a, versions) for a in aggregates}
    return recorded_in_order([per_aggregate[a][i] for i in range(len(versions)) for a in aggregates])


async def all_published(db: AsyncDatabase[Document]) -> bool:
    """The relay's saved watermark holds every event in the log (it saves it about once a
    second, and whenever it is idle)."""
    return await relay_backlog(db) == 0


async def wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    await eventually(check, timeout=within, what=what)


@asynccontextmanager
async def running_relay(
    settings: Settings,
    mongo: AsyncMongoClient[Document],
    *,
    redis: aioredis.Redis | None = None,
    producer_factory: ProducerFactory | None = None,
    holder: str | None = None,
) -> AsyncIterator[OutboxRelay]:
    relay = build_outbox_relay(
        settings, mongo=mongo, redis=redis, producer_factory=producer_factory, holder=holder
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class Received:
    key: str
    headers: dict[str, str]
    envelope: EventEnvelope


async def consume(
    settings: Settings, count: int, within: float = 30.0, settle: float = 0.0
) -> list[Received]:
    """Read the campaigns topic from the beginning until `count` messages (then `settle` more seconds)."""
    consumer = AIOKafkaConsumer(
        Topics(settings.topic_prefix).campaigns,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    received: list[Received] = []
    try:
        deadline = time.monotonic() + within
        while len(received) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                received.extend(_received(m) for m in messages)
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                received.extend(_received(m) for m in messages)
    finally:
        await consumer.stop()
    return received


def _received(message: object) -> Received:
    key = message.key  # type: ignore[attr-defined]
    headers = {k: v.decode() for k, v in message.headers}  # type: ignore[attr-defined]
    return Received(key.decode(), headers, decode_event(message.value))  # type: ignore[attr-defined]


def versions_by_key(received: list[Received]) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = {}
    for item in received:
        by_key.setdefault(item.key, []).append(item.envelope.aggregate_version)
    return by_key
