"""The replay's composition root: real adapters wired from the settings (the CLI's only door in)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from events import Topics
from projectors.adapters.generations import PROJECTIONS
from projectors.adapters.redis_projection import Projection, all_projections
from projectors.replay.adapters.kafka_source import KafkaEventSource
from projectors.replay.adapters.mongo_source import MongoEventSource
from projectors.replay.adapters.redis_generations import RedisGenerations
from projectors.replay.adapters.redis_writer import lane_writers
from projectors.replay.application.ports import EventSource
from projectors.replay.application.rebuild import WriterFactory
from projectors.replay.domain.plan import SourceName, select_projections
from query_api.adapters.events_log import EVENTS_COLLECTION, EventsLog
from service_runtime.settings import Settings

# Errors that mean a server is unreachable or failing, as opposed to a bug (the CLI says which).
UNREACHABLE: tuple[type[Exception], ...] = (RedisError, PyMongoError, KafkaError, OSError)
# Replay is a command an operator waits on: a missing MongoDB is reported after seconds.
MONGO_SELECTION_TIMEOUT_MS = 5000


@dataclass
class Replay:
    settings: Settings
    redis: Redis
    projections: dict[str, Projection]
    generations: RedisGenerations

    def select(self, name: str) -> list[str]:
        return select_projections(name, PROJECTIONS)

    def aggregate_types(self, names: Iterable[str]) -> dict[str, frozenset[str]]:
        return {name: self.projections[name].aggregate_types for name in names}

    def writers(self, batch_size: int) -> WriterFactory:
        return lane_writers(self.redis, self.projections, batch_size=batch_size)

    @asynccontextmanager
    async def source(self, name: SourceName, projections: Iterable[str]) -> AsyncIterator[EventSource]:
        kinds = sorted({kind for p in projections for kind in self.projections[p].aggregate_types})
        if name is SourceName.KAFKA:
            topics = Topics(self.settings.topic_prefix)
            kafka = KafkaEventSource(
                self.settings.kafka_bootstrap, {k: topics.for_aggregate(k) for k in kinds}
            )
            async with kafka:
                yield kafka
            return
        async with (
            self._mongo() as client,
            MongoEventSource(client[self.settings.mongo_db][EVENTS_COLLECTION], kinds) as mongo,
        ):
            yield mongo

    @asynccontextmanager
    async def history(self) -> AsyncIterator[EventsLog]:
        async with self._mongo() as client:
            yield EventsLog(client[self.settings.mongo_db][EVENTS_COLLECTION])

    @asynccontextmanager
    async def _mongo(self) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
        options: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in self.settings.mongo_url.lower():
            options["serverSelectionTimeoutMS"] = MONGO_SELECTION_TIMEOUT_MS
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.settings.mongo_url, **options)
        try:
            yield client
        finally:
            await client.close()


@asynccontextmanager
async def replay(settings: Settings) -> AsyncIterator[Replay]:
    redis = Redis.from_url(settings.redis_url)
    try:
        projections = {p.name: p for p in all_projections(settings.redis_prefix)}
        yield Replay(settings, redis, projections, RedisGenerations(redis, settings.redis_prefix))
    finally:
        await redis.aclose()
