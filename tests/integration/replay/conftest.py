"""Replay fixtures: the `campaigns replay` CLI in-process on the test's settings, and event writers.

Events reach the system as they do in production: recorded in the MongoDB log first, then
published to Kafka (what the outbox relay does), so both replay sources hold them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import Result
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from typer.testing import CliRunner

from events import EventEnvelope, to_log_document
from launcher import cli as campaigns_cli
from projectors.adapters.digest import generation_digest
from readmodels.generations import PROJECTIONS, live_generations
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import EventProducer

LOG_BATCH = 500

RunReplay = Callable[..., Awaitable[Result]]


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture
async def mongo(settings: Settings) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    yield client
    await client.close()


class EventWriter:
    """Records events in the log, then publishes them (the command side and the relay, in short)."""

    def __init__(self, settings: Settings, mongo: AsyncMongoClient[dict[str, Any]], kafka: EventProducer):
        self.log = mongo[settings.mongo_db]["events"]
        self.kafka = kafka

    async def write(self, envelopes: Sequence[EventEnvelope]) -> None:
        for start in range(0, len(envelopes), LOG_BATCH):
            await self.log.insert_many([to_log_document(e) for e in envelopes[start : start + LOG_BATCH]])
        await self.kafka.publish(envelopes)


@pytest.fixture
async def writer(settings: Settings, mongo: AsyncMongoClient[dict[str, Any]]) -> AsyncIterator[EventWriter]:
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await kafka.start()
    yield EventWriter(settings, mongo, EventProducer(settings, kafka))
    await kafka.stop()


@pytest.fixture
def replay_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> RunReplay:
    """`campaigns replay ARGS` through the real Typer app, on this test's settings.

    Run in a thread: the command calls asyncio.run, which needs a thread without a running loop.
    """
    from projectors.replay.entrypoints import cli as replay_cli_module

    monkeypatch.setattr(replay_cli_module, "get_settings", lambda: settings)

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, campaigns_cli.app, ["replay", *args])

    return run


async def live_digests(redis: Redis, settings: Settings) -> dict[str, str]:
    live = await live_generations(redis, settings.redis_prefix)
    return {p: await generation_digest(redis, settings.redis_prefix, live[p]) for p in PROJECTIONS}


async def delete_prefix(redis: Redis, settings: Settings) -> int:
    """Delete every key of this test's prefix: FLUSHALL for one isolated system (the server is shared)."""
    keys = [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])
    return len(keys)
