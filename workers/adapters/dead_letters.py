"""The dead-letter topics: the original record, unchanged, with the reason in headers.

The headers are the contract's (`events.dead_letters`), as every other dead-letter writer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from events import Topics
from events.dead_letters import DeadLetterOrigin, dead_letter_headers
from workers.application.event_worker import Delivery


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
        origin = DeadLetterOrigin(delivery.topic, delivery.partition, delivery.offset, self.consumer)
        headers = dead_letter_headers(
            delivery.headers, origin, reason=reason, error_type=error, attempts=attempts
        )
        await publisher.publish(delivery.value, key=delivery.key, headers=headers)
