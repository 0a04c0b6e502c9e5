"""A dead letter as read back from `<topic>.dlq`: where it is, where it came from, why it failed.

The record itself is the one the contract (`events.dead_letters`) describes: the original value,
key and headers, plus `dlq_*` headers. Records written before that contract named the reason
`dlq_error`; it is read as the reason too, so older dead letters stay operable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from events import Topics
from events import dead_letters as contract
from events.topics import DLQ_SUFFIX

LEGACY_REASON = "dlq_error"
DLQ_HEADER_PREFIX = "dlq_"


class InvalidRef(ValueError):
    """A record reference that is not `<dlq-topic>:<partition>:<offset>`."""


class NotADeadLetterTopic(ValueError):
    """A topic name that is not `<topic>.dlq`."""


def require_dlq_topic(topic: str) -> str:
    if not topic.endswith(DLQ_SUFFIX) or topic == DLQ_SUFFIX:
        raise NotADeadLetterTopic(
            f"{topic!r} is not a dead-letter topic (they end in {DLQ_SUFFIX}: {Topics.dlq(topic)}?)"
        )
    return topic


@dataclass(frozen=True, order=True)
class RecordRef:
    """Where a dead letter is: `<dlq-topic>:<partition>:<offset>`, the name every command takes."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> RecordRef:
        topic, _, rest = text.strip().rpartition(":")
        topic, _, partition = topic.rpartition(":")
        if not topic or not partition.isdigit() or not rest.isdigit():
            raise InvalidRef(f"{text!r} is not a record reference (<dlq-topic>:<partition>:<offset>)")
        try:
            require_dlq_topic(topic)
        except NotADeadLetterTopic as exc:
            raise InvalidRef(str(exc)) from exc
        return cls(topic, int(partition), int(rest))


@dataclass(frozen=True)
class Origin:
    """Where the record was before it was dead-lettered; one origin may be dead-lettered by several
    consumer groups (a campaign event refused by the campaigns and the stats projections)."""

    topic: str
    partition: int | None
    offset: int | None


@dataclass(frozen=True)
class DeadLetter:
    ref: RecordRef
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None = None

    def header(self, name: str) -> str | None:
        for header, value in self.headers:
            if header == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(contract.REASON) or self.header(LEGACY_REASON) or "(no reason given)"

    @property
    def error_type(self) -> str:
        return self.header(contract.ERROR_TYPE) or "unknown"

    @property
    def attempts(self) -> int | None:
        return _int(self.header(contract.ATTEMPTS))

    @property
    def consumer_group(self) -> str | None:
        return self.header(contract.CONSUMER_GROUP)

    @property
    def failed_at(self) -> str | None:
        return self.header(contract.FAILED_AT)

    @property
    def origin(self) -> Origin:
        topic = self.header(contract.ORIGINAL_TOPIC) or self.ref.topic.removesuffix(DLQ_SUFFIX)
        return Origin(
            topic,
            _int(self.header(contract.ORIGINAL_PARTITION)),
            _int(self.header(contract.ORIGINAL_OFFSET)),
        )

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record had on its original topic (every `dlq_*` header removed)."""
        return [(name, value) for name, value in self.headers if not name.startswith(DLQ_HEADER_PREFIX)]

    def _envelope(self) -> dict[str, Any]:
        try:
            decoded = orjson.loads(self.value or b"")
        except orjson.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    @property
    def aggregate_id(self) -> str | None:
        envelope_id = self._envelope().get("aggregate_id")
        if isinstance(envelope_id, str):
            return envelope_id
        return self.key.decode("utf-8", "replace") if self.key else None

    @property
    def aggregate_version(self) -> int | None:
        version = _int(self.header("aggregate_version"))
        if version is not None:
            return version
        from_value = self._envelope().get("aggregate_version")
        return from_value if isinstance(from_value, int) and not isinstance(from_value, bool) else None

    @property
    def event_type(self) -> str | None:
        from_value = self._envelope().get("event_type")
        return self.header("event_type") or (from_value if isinstance(from_value, str) else None)

    def summary(self) -> DeadLetterSummary:
        return DeadLetterSummary(
            ref=self.ref,
            origin=self.origin,
            aggregate_id=self.aggregate_id,
            aggregate_version=self.aggregate_version,
            event_type=self.event_type,
            reason=self.reason,
            error_type=self.error_type,
            consumer_group=self.consumer_group,
            attempts=self.attempts,
            failed_at=self.failed_at,
        )


@dataclass(frozen=True)
class DeadLetterSummary:
    """A dead letter without its value: what lists and replay plans keep (a few hundred bytes)."""

    ref: RecordRef
    origin: Origin
    aggregate_id: str | None
    aggregate_version: int | None
    event_type: str | None
    reason: str
    error_type: str
    consumer_group: str | None
    attempts: int | None
    failed_at: str | None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None
