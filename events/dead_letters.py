"""The dead-letter contract: what every writer puts on `<topic>.dlq`, and how a reader reads it back.

A dead letter is the original record, unchanged (value, key and every original header, the
correlation id included), plus the `dlq_*` headers below. Every writer (projections, workers,
the relay's quarantine) builds them here, so one reader (the `dlq` tools, the console, the
AsyncAPI document) understands them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

REASON = "dlq_reason"
ERROR_TYPE = "dlq_error_type"
ATTEMPTS = "dlq_attempts"
CONSUMER_GROUP = "dlq_consumer_group"
ORIGINAL_TOPIC = "dlq_original_topic"
ORIGINAL_PARTITION = "dlq_original_partition"
ORIGINAL_OFFSET = "dlq_original_offset"
FAILED_AT = "dlq_failed_at"

HEADER_DESCRIPTIONS: dict[str, str] = {
    REASON: "Why the record could not be handled, for a person (at most 2,000 characters).",
    ERROR_TYPE: (
        "The kind of failure: malformed, unknown_type, invalid, refused, gap_unfillable, unbuildable."
    ),
    ATTEMPTS: "How many times the consumer tried before giving up (decimal).",
    CONSUMER_GROUP: "The Kafka consumer group that gave up on the record.",
    ORIGINAL_TOPIC: "The topic the record was read from.",
    ORIGINAL_PARTITION: "Its partition there (decimal).",
    ORIGINAL_OFFSET: "Its offset there (decimal).",
    FAILED_AT: "When it was dead-lettered (UTC, ISO 8601 with milliseconds).",
}

# Headers far past this would push the record over Kafka's message size limit; the reason's
# beginning is what a reader needs.
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class DeadLetterOrigin:
    """Where the record was and who gave up on it."""

    topic: str
    partition: int
    offset: int
    consumer_group: str


def dead_letter_headers(
    original: Mapping[str, str] | Iterable[tuple[str, str]],
    origin: DeadLetterOrigin,
    *,
    reason: str,
    error_type: str,
    attempts: int = 1,
    failed_at: datetime | None = None,
) -> dict[str, str]:
    """The original headers, kept as they were, plus the `dlq_*` headers of this contract."""
    headers = dict(original.items() if isinstance(original, Mapping) else original)
    headers.update(
        {
            REASON: reason[:MAX_REASON_CHARS],
            ERROR_TYPE: error_type,
            ATTEMPTS: str(attempts),
            CONSUMER_GROUP: origin.consumer_group,
            ORIGINAL_TOPIC: origin.topic,
            ORIGINAL_PARTITION: str(origin.partition),
            ORIGINAL_OFFSET: str(origin.offset),
            FAILED_AT: (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        }
    )
    return headers
