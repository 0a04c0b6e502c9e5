"""Dead letters to Kafka: the original bytes and key on `<topic>.dlq`, the reason in headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from faststream.kafka import KafkaBroker

from events import EventEnvelope, Topics
from projectors.application.consume import DeadLetter


def declare_dead_letter_topics(broker: KafkaBroker, topics: Sequence[str]) -> None:
    """Declare the publishers, so the AsyncAPI document shows where dead letters go."""
    for topic in topics:
        broker.publisher(
            Topics.dlq(topic),
            title=f"{Topics.dlq(topic)}:publish",
            description=(
                "Records a projector could not apply (not JSON, unknown type, invalid payload, "
                "refused by the read model), unchanged, with dlq_* headers naming the reason."
            ),
            schema=EventEnvelope,
        )


class KafkaDeadLetters:
    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        # Each send waits for the broker's acknowledgement: the batch is committed only after.
        await asyncio.gather(
            *(
                self.broker.publish(
                    letter.record.value or b"",
                    topic=Topics.dlq(letter.record.topic),
                    key=letter.record.key,
                    headers=letter.headers(),
                )
                for letter in letters
            )
        )
