"""Read-side fixtures: a Redis client, a Kafka producer, running projectors, the query app in-process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events import EventEnvelope, Topics, encode_event, to_log_document
from projectors.entrypoints.projectors import Projectors
from query_api.entrypoints.http.app import create_app
from readmodels.status import read_status
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.support import loopback
from tests.support.waiting import eventually


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float = 20, what: str = "condition"
) -> None:
    """Poll `check` (tests.support.waiting.eventually under this module's old name)."""
    await eventually(check, timeout=within, what=what)


def headers_of(envelope: EventEnvelope) -> list[tuple[str, bytes]]:
    return [
        ("event_type", envelope.event_type.encode()),
        ("event_id", str(envelope.event_id).encode()),
        ("correlation_id", envelope.correlation_id.encode()),
        ("aggregate_version", str(envelope.aggregate_version).encode()),
    ]


class EventProducer:
    """Publishes envelopes as the outbox relay does (key, JSON value, headers)."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.producer = producer

    async def publish(self, envelopes: Sequence[EventEnvelope]) -> None:
        sends = [
            await self.producer.send(
                self.topics.for_aggregate(e.aggregate_type),
                key=e.aggregate_id.encode(),
                value=encode_event(e),
                headers=headers_of(e),
            )
            for e in envelopes
        ]
        await asyncio.gather(*sends)

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes = b"poison", headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        await self.producer.send_and_wait(topic, value=value, key=key, headers=headers or [])


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[EventProducer]:
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await kafka.start()
    yield EventProducer(settings, kafka)
    await kafka.stop()


# Leaving the consumer groups can stall on a loaded broker (LeaveGroup request timeouts seen in
# a fresh-clone run); by then the test's outcome is decided, so a stop is waited on this long.
STOP_SECONDS = 30


@asynccontextmanager
async def running_projectors(settings: Settings) -> AsyncIterator[Projectors]:
    projectors = Projectors(settings)
    await projectors.start()
    try:
        yield projectors
    finally:
        # Not `wait_for`: on its timeout it cancels the stop and then waits for it to end, which
        # a client call that swallows the cancellation never does (a 300 s teardown).
        stopping = asyncio.create_task(projectors.stop())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_SECONDS)
        if not done:
            stopping.cancel()
            logging.getLogger(__name__).warning("projectors did not stop within %d s", STOP_SECONDS)


@pytest.fixture
async def projectors(settings: Settings) -> AsyncIterator[Projectors]:
    async with running_projectors(settings) as running:
        yield running


async def records_seen(redis: Redis, settings: Settings, projection: str) -> int:
    status = (await read_status(redis, settings.redis_prefix, [projection]))[projection]
    return int(status.get("records_total", 0))


async def wait_records(
    redis: Redis, settings: Settings, projection: str, count: int, within: float = 30
) -> None:
    async def done() -> bool:
        return await records_seen(redis, settings, projection) >= count

    await wait_until(done, within, f"{projection} to consume {count} records")


async def record_in_log(settings: Settings, envelopes: Sequence[EventEnvelope]) -> None:
    """Write envelopes to the MongoDB events log as the command side does (history reads it)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        await client[settings.mongo_db]["events"].insert_many([to_log_document(e) for e in envelopes])
    finally:
        await client.close()


class QueryClient:
    """The query app in-process, its lifespan running, as uvicorn would run it."""

    def __init__(self, app: FastAPI, state: dict[str, Any], settings: Settings) -> None:
        self.app = app
        self.state = state
        self.settings = settings

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)

        self.http = loopback.client(transport=httpx.ASGITransport(app=with_state), base_url="http://query")

    def token(self, user_id: str, roles: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_access_token(self.settings, user_id, roles or ['user'])}"}

    def admin(self) -> dict[str, str]:
        return self.token("the-admin", ["user", "admin"])

    @property
    def read_side(self) -> Any:
        return self.state["read_side"]


@asynccontextmanager
async def query_app(settings: Settings) -> AsyncIterator[QueryClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        client = QueryClient(app, dict(state or {}), settings)
        try:
            yield client
        finally:
            await client.http.aclose()


@pytest.fixture
async def query(settings: Settings) -> AsyncIterator[QueryClient]:
    async with query_app(settings) as client:
        yield client
