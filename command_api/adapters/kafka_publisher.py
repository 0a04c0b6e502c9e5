"""Publishing event envelopes to Kafka with an idempotent producer, in order per aggregate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events import EventEnvelope, Topics, encode_event
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

ProducerFactory = Callable[[], AIOKafkaProducer]
STOP_TIMEOUT_SECONDS = 5.0
# How long one send may wait for the broker's acknowledgement before it counts as failed.
REQUEST_TIMEOUT_MS = 10_000


def kafka_producer_factory(settings: Settings) -> ProducerFactory:
    def create() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            linger_ms=2,
        )

    return create


class PublishInterrupted(Exception):
    """Publishing stopped before every envelope was acknowledged (see `acknowledged`)."""

    def __init__(self, acknowledged: list[str], cause: BaseException) -> None:
        self.acknowledged = acknowledged
        self.cause = cause
        super().__init__(f"{len(acknowledged)} acknowledged before: {cause!r}")


class KafkaEventPublisher:
    """Sends each aggregate's events one after another, each only after its predecessor was
    acknowledged, so no failure or retry can ever put a later version ahead of an earlier one."""

    def __init__(self, producer_factory: ProducerFactory, topics: Topics) -> None:
        self._factory = producer_factory
        self._topics = topics
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, envelopes: list[EventEnvelope], may_continue: Callable[[], None]) -> list[str]:
        """Publish in per-aggregate order; returns the acknowledged event ids.

        `may_continue` is called before each send and raises to stop (a lost lease). Raises
        PublishInterrupted carrying what was acknowledged before the first failure.
        """
        acknowledged: list[str] = []
        try:
            producer = await self._started()
        except (KafkaError, OSError) as exc:
            raise PublishInterrupted(acknowledged, exc) from exc
        chains: dict[str, list[EventEnvelope]] = {}
        for envelope in envelopes:
            chains.setdefault(envelope.aggregate_id, []).append(envelope)

        async def send_chain(chain: list[EventEnvelope]) -> None:
            for envelope in chain:
                may_continue()
                delivery = await producer.send(
                    self._topics.for_aggregate(envelope.aggregate_type),
                    value=encode_event(envelope),
                    key=envelope.aggregate_id.encode(),
                    headers=_headers(envelope),
                )
                await delivery
                acknowledged.append(str(envelope.event_id))

        results = await asyncio.gather(*(send_chain(c) for c in chains.values()), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            if any(isinstance(f, KafkaError | OSError) for f in failures):
                # The idempotent producer's sequence numbers may be out of step after a failed
                # batch; a fresh producer (new producer id) starts clean.
                await self.close()
            raise PublishInterrupted(acknowledged, failures[0])
        return acknowledged

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop(producer)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await _stop(producer)
                raise
            self._producer = producer
        return self._producer


def _headers(envelope: EventEnvelope) -> list[tuple[str, bytes]]:
    return [
        ("event_type", envelope.event_type.encode()),
        ("event_id", str(envelope.event_id).encode()),
        ("correlation_id", envelope.correlation_id.encode()),
        ("aggregate_version", str(envelope.aggregate_version).encode()),
    ]


async def _stop(producer: AIOKafkaProducer) -> None:
    # With the broker gone, stop() would wait for undeliverable batches; bound it.
    with suppress(Exception):
        await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_SECONDS)
