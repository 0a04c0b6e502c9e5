"""Aggregates record the events their commands produce; the version counts those events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel


@dataclass(frozen=True)
class DomainEvent:
    """One recorded change: the payload is the contract's model of this event type."""

    aggregate_id: str
    aggregate_version: int
    payload: BaseModel
    occurred_at: datetime
    # What caused it when the domain knows (a timer's id for a scheduled transition).
    causation_id: str | None = None

    @property
    def event_type(self) -> str:
        # The contract names each payload model after its event type (events.types).
        return type(self.payload).__name__


@dataclass(eq=False)
class Aggregate:
    id: str
    version: int
    pending_events: list[DomainEvent] = field(default_factory=list, kw_only=True, repr=False)

    @property
    def stored_version(self) -> int:
        """The version as loaded: what the stored document must still say when this is saved."""
        return self.version - len(self.pending_events)

    def _record(self, payload: BaseModel, now: datetime, causation_id: str | None = None) -> None:
        self.version += 1
        self.pending_events.append(DomainEvent(self.id, self.version, payload, now, causation_id))

    def collect_events(self) -> list[DomainEvent]:
        events, self.pending_events = self.pending_events, []
        return events


def to_millisecond_utc(value: datetime) -> datetime:
    """MongoDB keeps milliseconds; truncating first keeps the state document and the events equal."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
