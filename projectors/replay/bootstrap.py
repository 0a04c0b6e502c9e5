"""The replay's composition root: real adapters wired from the settings, and the use cases on them.

`async with replay(settings) as tools: await tools.rebuild("all", SourceName.KAFKA, NoProgress(), 0)`
is what the CLI runs, and what a benchmark or a script can run in-process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from events import Topics
from events.log import EventsLog, events_collection
from projectors.adapters.redis_projection import all_projections
from projectors.application.ports import Projection
from projectors.replay.adapters.kafka_source import KafkaEventSource
from projectors.replay.adapters.mongo_source import MongoEventSource
from projectors.replay.adapters.partitioned_pass import PartitionedPass
from projectors.replay.adapters.redis_generations import RedisGenerations
from projectors.replay.adapters.redis_writer import BATCH_SIZE, lane_writers
from projectors.replay.application.inspect_aggregate import inspect_aggregate
from projectors.replay.application.ports import EventSource, Progress
from projectors.replay.application.rebuild import (
    PlannedRebuild,
    RebuildOptions,
    RebuildReport,
    WriterFactory,
    plan_rebuild,
    rebuild,
)
from projectors.replay.application.verify import VerifyOptions, VerifyReport, verify
from projectors.replay.domain.plan import SourceName, select_projections
from projectors.replay.domain.time_travel import AsOf, Inspection
from readmodels.generations import PROJECTIONS
from service_runtime.redis_client import connect_redis
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
    last_full_pass: PartitionedPass | None = None

    def select(self, name: str) -> list[str]:
        return select_projections(name, PROJECTIONS)

    def aggregate_types(self, names: Iterable[str]) -> dict[str, frozenset[str]]:
        return {name: self.projections[name].aggregate_types for name in names}

    def full_pass(self, batch_size: int, processes: int | None = None) -> PartitionedPass:
        """The full pass over `processes` (the setting's, if None) when the source is Kafka; kept
        as `last_full_pass` (what its other processes reported: the bench adds their memory)."""
        self.last_full_pass = PartitionedPass(
            self.settings,
            self.settings.replay_processes if processes is None else processes,
            self.settings.replay_parallel_min_events,
            batch_size,
        )
        return self.last_full_pass

    def writers(self, batch_size: int, fold_campaigns: int | None = None) -> WriterFactory:
        """Writers folding `fold_campaigns` at a time (the setting's window, if None)."""
        return lane_writers(
            self.redis,
            self.projections,
            batch_size=batch_size,
            fold_campaigns=self.settings.replay_fold_campaigns if fold_campaigns is None else fold_campaigns,
            write_campaigns=self.settings.replay_write_campaigns,
        )

    def _kinds(self, projections: Iterable[str]) -> list[str]:
        return sorted({kind for p in projections for kind in self.projections[p].aggregate_types})

    def kafka_source(
        self, projections: Iterable[str], start: Mapping[TopicPartition, int] | None = None
    ) -> KafkaEventSource:
        """The topics of these projections' aggregates (`start`: see `KafkaEventSource`)."""
        topics = Topics(self.settings.topic_prefix)
        kinds = self._kinds(projections)
        return KafkaEventSource(
            self.settings.kafka_bootstrap, {k: topics.for_aggregate(k) for k in kinds}, start
        )

    @asynccontextmanager
    async def source(self, name: SourceName, projections: Iterable[str]) -> AsyncIterator[EventSource]:
        if name is SourceName.KAFKA:
            kafka = self.kafka_source(projections)
            async with kafka:
                yield kafka
            return
        async with (
            self._mongo() as client,
            MongoEventSource(
                events_collection(client, self.settings.mongo_db), self._kinds(projections)
            ) as mongo,
        ):
            yield mongo

    async def plan(self, projection: str, source: SourceName) -> list[PlannedRebuild]:
        names = self.select(projection)
        async with self.source(source, names) as events:
            return await plan_rebuild(names, self.aggregate_types(names), events, self.generations)

    async def rebuild(
        self,
        projection: str,
        source: SourceName,
        progress: Progress,
        grace_seconds: float,
        batch_size: int = BATCH_SIZE,
        processes: int | None = None,
    ) -> RebuildReport:
        names = self.select(projection)
        full_pass = self.full_pass(batch_size, processes)
        async with self.source(source, names) as events, self._early(full_pass, events):
            return await rebuild(
                names,
                events,
                self.generations,
                self.writers(batch_size),
                progress,
                RebuildOptions(grace_seconds=grace_seconds, full_pass=full_pass),
            )

    async def verify(
        self, projection: str, source: SourceName, progress: Progress, processes: int | None = None
    ) -> VerifyReport:
        names = self.select(projection)
        full_pass = self.full_pass(BATCH_SIZE, processes)
        async with self.source(source, names) as events, self._early(full_pass, events):
            return await verify(
                names,
                events,
                self.generations,
                self.generations,
                self.writers(BATCH_SIZE),
                progress,
                VerifyOptions(full_pass=full_pass),
            )

    @staticmethod
    @asynccontextmanager
    async def _early(full_pass: PartitionedPass, events: EventSource) -> AsyncIterator[None]:
        """The full pass's other processes started now (see `PartitionedPass.start_early`), and
        those it did not use stopped at the end."""
        try:
            await full_pass.start_early(events)
            yield
        finally:
            await full_pass.close()

    async def inspect(self, aggregate_id: str, as_of: AsOf) -> Inspection | None:
        async with self.history() as history:
            return await inspect_aggregate(history, aggregate_id, as_of)

    async def drop(self, generation: str) -> int:
        return await self.generations.clear(generation)

    @asynccontextmanager
    async def history(self) -> AsyncIterator[EventsLog]:
        async with self._mongo() as client:
            yield EventsLog(events_collection(client, self.settings.mongo_db))

    @asynccontextmanager
    async def _mongo(self) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
        # Read concern majority: replay never folds an event a failover could roll back.
        options: dict[str, Any] = {"readConcernLevel": "majority"}
        if "serverselectiontimeoutms" not in self.settings.mongo_url.lower():
            options["serverSelectionTimeoutMS"] = MONGO_SELECTION_TIMEOUT_MS
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.settings.mongo_url, **options)
        try:
            yield client
        finally:
            await client.close()


@asynccontextmanager
async def replay(settings: Settings) -> AsyncIterator[Replay]:
    redis = connect_redis(settings)
    try:
        projections = {p.name: p for p in all_projections(settings.redis_prefix, settings.read_model_buckets)}
        yield Replay(settings, redis, projections, RedisGenerations(redis, settings.redis_prefix))
    finally:
        await redis.aclose()
