"""The dead-letter topics: the original record, unchanged, with the reason in headers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from events import Topics
from projectors.workers.application.event_worker import Delivery

# The same header names as the projectors' dead letters, so one reader understands both.
REASON = "dlq_error"
ERROR = "dlq_error_type"
ATTEMPTS = "dlq_attempts"
CONSUMER = "dlq_consumer_group"
SOURCE_TOPIC = "dlq_original_topic"
SOURCE_PARTITION = "dlq_original_partition"
SOURCE_OFFSET = "dlq_original_offset"
FAILED_AT = "dlq_failed_at"
# Headers far past this would push the record over Kafka's message size limit; the reason's
# beginning is what a reader needs.
MAX_REASON_CHARS = 2000


class RecordPublisher(Protocol):
    """What is used of a FastStream publisher declared with `broker.publisher(topic)`."""

    async def publish(self, message: Any, *, key: bytes | None, headers: dict[str, str]) -> Any: ...


class KafkaDeadLetters:
    """Publishes to `Topics.dlq(source topic)` through the declared FastStream publishers."""

    def __init__(self, consumer: str, publishers: Mapping[str, RecordPublisher]) -> None:
        self.consumer = consumer
        self.publishers = publishers

    async def publish(self, delivery: Delivery, *, reason: str, error: str, attempts: int) -> None:
        publisher = self.publishers[Topics.dlq(delivery.topic)]
        headers = {
            **delivery.headers,
            REASON: reason[:MAX_REASON_CHARS],
            ERROR: error,
            ATTEMPTS: str(attempts),
            CONSUMER: self.consumer,
            SOURCE_TOPIC: delivery.topic,
            SOURCE_PARTITION: str(delivery.partition),
            SOURCE_OFFSET: str(delivery.offset),
            FAILED_AT: datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        await publisher.publish(delivery.value, key=delivery.key, headers=headers)
