"""The dead-letter topics: the original record, unchanged, with the reason in headers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from events import Topics
from projectors.workers.application.event_worker import Delivery

REASON = "x-dlq-reason"
ERROR = "x-dlq-error"
ATTEMPTS = "x-dlq-attempts"
CONSUMER = "x-dlq-consumer"
SOURCE_TOPIC = "x-dlq-source-topic"
SOURCE_PARTITION = "x-dlq-source-partition"
SOURCE_OFFSET = "x-dlq-source-offset"
FAILED_AT = "x-dlq-failed-at"
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
            FAILED_AT: f"{time.time():.3f}",
        }
        await publisher.publish(delivery.value, key=delivery.key, headers=headers)
