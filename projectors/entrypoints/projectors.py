"""The projectors process: one FastStream batch subscriber (own consumer group) per projection.

`campaigns serve projectors` runs `run(settings)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.params import NoCast
from redis.asyncio import Redis

from events import Topics
from projectors.adapters.dead_letters import KafkaDeadLetters, declare_dead_letter_topics
from projectors.adapters.metrics import observe_batch, observe_lag
from projectors.adapters.redis_projection import all_projections
from projectors.application.consume import EventRecord, ProjectionConsumer
from projectors.entrypoints.console_operations import console_operations
from projectors.monitoring.sampler import sampling
from readmodels.generations import claim_live_generation
from readmodels.groups import projection_group, projection_topics
from readmodels.keyspace import generation_base, parked_set_key
from readmodels.status import write_heartbeat
from service_runtime.kafka_topics import require_topics
from service_runtime.logs import configure_logging
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# After a failed batch (Redis or Kafka unreachable), wait before the redelivery is tried, so an
# outage is not met with a hot loop.
RETRY_PAUSE_SECONDS = 1.0


async def _records(message: StreamMessage[Any], original: Callable[..., Awaitable[Any]]) -> list[EventRecord]:
    """The batch as records: no JSON decoding here, each value is decoded (or dead-lettered) alone."""
    raw: tuple[ConsumerRecord[bytes, bytes], ...] = message.raw_message
    return [EventRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ())) for r in raw]


async def _tolerant_headers(
    batch: tuple[ConsumerRecord[bytes, bytes], ...], original: Callable[..., Awaitable[Any]]
) -> StreamMessage[Any]:
    """FastStream decodes every header as UTF-8; one bad header must not sink a whole batch."""
    try:
        return await original(batch)  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        cleaned = tuple(
            dataclasses.replace(
                r, headers=[(k, v.decode("utf-8", "replace").encode()) for k, v in (r.headers or ())]
            )
            for r in batch
        )
        return await original(cleaned)  # type: ignore[no-any-return]


class Projectors:
    """The broker with every projection subscribed, the Redis client and the heartbeat."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else Redis.from_url(settings.redis_url)
        self._owns_redis = redis is None
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"{settings.topic_prefix}projectors",
            acks="all",
            enable_idempotence=True,
            metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
            allow_auto_create_topics=False,
            logger=logging.getLogger("projectors.faststream"),
            log_level=logging.DEBUG,
            description="Projectors: build the Redis read models from the domain events.",
        )
        self.topics = Topics(settings.topic_prefix)
        declare_dead_letter_topics(self.broker, [self.topics.users, self.topics.campaigns])
        dead_letters = KafkaDeadLetters(self.broker)
        self.consumers: dict[str, ProjectionConsumer] = {}
        self.subscribers: dict[str, Any] = {}
        for projection in all_projections(settings.redis_prefix):
            group = projection_group(settings, projection.name)
            consumer = ProjectionConsumer(projection, self.redis, dead_letters, group)
            self.consumers[projection.name] = consumer
            self.subscribers[projection.name] = self._subscribe(consumer, group)
        self._heartbeat: asyncio.Task[None] | None = None

    def _subscribe(self, consumer: ProjectionConsumer, group: str) -> Any:
        projection = consumer.projection
        subscriber = self.broker.subscriber(
            *projection_topics(projection.aggregate_types, self.topics),
            group_id=group,
            batch=True,
            max_records=self.settings.consumer_batch_size,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # Commit after the handler returned (Redis written, dead letters acknowledged);
            # on an exception seek back so the batch is consumed again.
            ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=_tolerant_headers,
            decoder=_records,
            title=f"{group}:consume",
            description=f"The {projection.name} projection, consumer group {group}.",
        )

        async def project(records: NoCast[list[EventRecord]]) -> None:
            started = time.perf_counter()
            try:
                report = await consumer.handle(records)
            except Exception:
                log.exception("batch not applied; it will be consumed again", extra={"group": group})
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                raise
            observe_batch(projection.name, report, time.perf_counter() - started)

        project.__name__ = project.__qualname__ = f"project_{projection.name}"
        subscriber(project)
        return subscriber

    async def start(self) -> None:
        for name in self.consumers:
            await claim_live_generation(self.redis, self.settings.redis_prefix, name)
        await self.broker.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="projectors-heartbeat")
        log.info("projectors started", extra={"projections": list(self.consumers)})

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        # Waits for a batch in progress to finish (and commit) before leaving the group.
        await self.broker.stop()
        if self._owns_redis:
            await self.redis.aclose()
        log.info("projectors stopped")

    async def __aenter__(self) -> Projectors:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _beat(self) -> None:
        while True:
            for name, consumer in self.consumers.items():
                try:
                    await self._beat_one(name, consumer)
                except Exception:
                    log.warning("heartbeat not written", exc_info=True, extra={"projection": name})
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _beat_one(self, name: str, consumer: ProjectionConsumer) -> None:
        subscriber = self.subscribers[name]
        kafka: AIOKafkaConsumer | None = subscriber.consumer
        if kafka is None or not subscriber.running:
            return  # no heartbeat: the query API's readiness sees the projector as stale
        prefix = self.settings.redis_prefix
        generation = await claim_live_generation(self.redis, prefix, name)
        parked_now = await self.redis.scard(parked_set_key(generation_base(prefix, generation)))
        lag = await _lag(kafka)
        observe_lag(name, lag)
        await write_heartbeat(
            self.redis,
            prefix,
            name,
            {
                "projection": name,
                "state": "running",
                "generation": generation,
                "consumer_group": consumer.consumer_group,
                "instance": consumer.instance,
                "lag": lag,
                "partitions": len(kafka.assignment()),
                "aggregates_with_parked_events": parked_now,
            },
        )


async def _lag(consumer: AIOKafkaConsumer) -> int:
    """Records between this consumer's position and the end of its partitions (as last fetched)."""
    lag = 0
    for partition in consumer.assignment():
        end = consumer.highwater(partition)
        if end is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(partition), timeout=1)
        except Exception:
            log.debug("position unknown", exc_info=True, extra={"partition": str(partition)})
            continue
        lag += max(0, end - position)
    return lag


async def serve(settings: Settings) -> None:
    """Run every projection until cancelled, then leave the consumer groups cleanly."""
    async with Projectors(settings):
        await asyncio.Event().wait()


async def run(settings: Settings) -> None:
    """What `campaigns serve projectors` runs: until SIGTERM or SIGINT."""
    configure_logging("projectors")
    await require_topics(settings, "projectors")
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with Projectors(settings) as projectors:
            async with (
                sampling(settings, projectors.redis),
                console_operations(settings, projectors.redis),
            ):
                await stopping.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
