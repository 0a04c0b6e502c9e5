"""Publishing event envelopes to Kafka in transactions, in order per aggregate.

The producer is transactional with a stable `transactional.id`: when a relay starts its producer,
Kafka bumps the id's epoch and aborts whatever an older producer with the same id left open, and
from then on that older producer's sends and commits fail with ProducerFenced. So a relay that was
paused past its lease cannot publish what it had buffered, whatever its clock says. Consumers read
`read_committed`, so a batch is seen whole or not at all.

One batch is one transaction. Records to one partition leave in send order (the producer keeps a
single request in flight per broker and is idempotent), and a batch that fails anywhere is
aborted whole, so a retry can never put a later version ahead of an earlier one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

from events import EventEnvelope, Topics
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

ProducerFactory = Callable[[], AIOKafkaProducer]
STOP_TIMEOUT_SECONDS = 5.0
# How long one send may wait for the broker's acknowledgement before it counts as failed.
REQUEST_TIMEOUT_MS = 10_000
# Kafka aborts a transaction left open this long (a relay that stalled mid-batch).
TRANSACTION_TIMEOUT_MS = 30_000
FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed)


def transactional_id(settings: Settings) -> str:
    """Stable across restarts; the topic prefix keeps separate systems (and tests) apart."""
    return f"{settings.topic_prefix}{settings.relay_transactional_id}"


def kafka_producer_factory(settings: Settings) -> ProducerFactory:
    transactions: dict[str, object] = (
        {"transactional_id": transactional_id(settings), "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
        if settings.relay_transactions
        else {}
    )

    def create() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            **transactions,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_request_size=settings.relay_max_message_bytes,
            linger_ms=2,
            metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        )

    return create


@dataclass(frozen=True)
class Outgoing:
    """One event ready to send: its envelope and its serialised value."""

    envelope: EventEnvelope
    value: bytes


class PublishFailed(Exception):
    """Kafka did not take the batch; nothing of it is visible to read_committed consumers."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(repr(cause))


class ProducerFencedOut(Exception):
    """A newer producer with our transactional.id is live: this relay must stop publishing."""


class Unpublishable(Exception):
    """Kafka refuses this event itself (too large); the batch was not committed."""

    def __init__(self, event_id: str, reason: str) -> None:
        self.event_id = event_id
        self.reason = reason
        super().__init__(f"event {event_id}: {reason}")


class KafkaEventPublisher:
    def __init__(
        self, producer_factory: ProducerFactory, topics: Topics, *, transactional: bool = True
    ) -> None:
        self._factory = producer_factory
        self._topics = topics
        # Off only for the bench's comparison (settings.relay_transactions): then a batch is sent
        # and awaited, with no transaction around it.
        self._transactional = transactional
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, batch: Sequence[Outgoing], may_continue: Callable[[], None]) -> None:
        """Publish the batch (in aggregate/version order) in one transaction, committed on return.

        `may_continue` is called before each send and before the commit, and raises to stop (a
        lost lease); the transaction is then abandoned. Raises ProducerFencedOut, Unpublishable
        or PublishFailed; on any of them nothing of the batch was committed.
        """
        if not batch:
            return
        try:
            producer = await self._started()
        except FENCED as exc:
            raise ProducerFencedOut(str(exc)) from exc
        except (KafkaError, OSError) as exc:
            raise PublishFailed(exc) from exc
        try:
            if self._transactional:
                await producer.begin_transaction()
            deliveries = []
            for item in batch:
                may_continue()
                deliveries.append((item, await self._send(producer, item)))
            for item, delivery in deliveries:
                try:
                    await delivery
                except MessageSizeTooLargeError as exc:
                    raise Unpublishable(str(item.envelope.event_id), f"too large for Kafka: {exc}") from exc
            may_continue()
            if self._transactional:
                await producer.commit_transaction()
        except BaseException as exc:
            # Abandon the transaction with its producer: the next producer's start (same id)
            # aborts it, and a fenced producer is of no further use anyway.
            await asyncio.shield(self.close())
            if isinstance(exc, FENCED):
                raise ProducerFencedOut(str(exc)) from exc
            if isinstance(exc, KafkaError | OSError):
                raise PublishFailed(exc) from exc
            raise

    async def _send(self, producer: AIOKafkaProducer, item: Outgoing) -> asyncio.Future[object]:
        envelope = item.envelope
        try:
            delivery: asyncio.Future[object] = await producer.send(
                self._topics.for_aggregate(envelope.aggregate_type),
                value=item.value,
                key=envelope.aggregate_id.encode(),
                headers=_headers(envelope),
            )
        except MessageSizeTooLargeError as exc:
            raise Unpublishable(str(envelope.event_id), f"too large for Kafka: {exc}") from exc
        return delivery

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
