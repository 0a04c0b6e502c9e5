"""What the dead-letter use cases need from the outside: the topics, a producer, and a ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from deadletters.domain.records import DeadLetter, RecordRef


class UnknownTopic(LookupError):
    """The dead-letter topic does not exist."""


class DeadLetterLog(Protocol):
    """The `<topic>.dlq` topics, read without a consumer group (no one else notices)."""

    async def end_offsets(self, topic: str) -> dict[int, int]: ...

    def scan(self, topic: str, start: Mapping[int, int]) -> AsyncIterator[Sequence[DeadLetter]]:
        """Pages of records from `start` (partition -> offset; earlier ones are skipped) to the
        end offsets as of the scan's beginning."""
        ...

    async def fetch(self, refs: Collection[RecordRef]) -> dict[RecordRef, DeadLetter]:
        """These records (those gone past retention are left out)."""
        ...


class Redriver(Protocol):
    async def produce(self, letters: Sequence[DeadLetter]) -> None:
        """Produce each record's original value, key and headers back onto its original topic, in
        this order, and return once Kafka acknowledged all of them."""
        ...


@dataclass
class AuditEntry:
    action: str  # "replay" | "purge"
    actor: str
    topic: str
    started_at: datetime
    details: dict[str, Any] = field(default_factory=dict)


class Ledger(Protocol):
    """What the operations remember in MongoDB: re-driven refs, purge marks, the audit trail."""

    async def purged_below(self, topic: str) -> dict[int, int]:
        """Per partition, the offset below which every record was purged."""
        ...

    async def mark_purged(self, topic: str, below: Mapping[int, int], audit_id: str) -> None: ...

    async def redriven(self, refs: Collection[RecordRef]) -> set[RecordRef]:
        """Which of these refs were re-driven already."""
        ...

    async def mark_redriven(self, refs: Collection[RecordRef], audit_id: str, at: datetime) -> None: ...

    async def open_audit(self, entry: AuditEntry) -> str: ...

    async def close_audit(
        self, audit_id: str, result: str, details: Mapping[str, Any], at: datetime
    ) -> None: ...

    async def redrive_of(self, ref: RecordRef) -> dict[str, Any] | None:
        """When and by which audit record `ref` was re-driven, if it was."""
        ...
