"""The event envelope: the one shape every event has on the wire and in the log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

AggregateType = Literal["user", "campaign"]


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    event_type: str = Field(min_length=1, max_length=100)
    schema_version: int = Field(ge=1)
    aggregate_type: AggregateType
    aggregate_id: str = Field(min_length=1, max_length=100)
    aggregate_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    correlation_id: str = Field(min_length=1, max_length=200)
    causation_id: str | None = Field(default=None, max_length=200)
    actor_id: str | None = Field(default=None, max_length=100)
    payload: dict[str, Any]

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def millisecond_utc(value: datetime) -> datetime:
    """`value` in UTC, truncated to milliseconds (what MongoDB keeps)."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def utc_now() -> datetime:
    """The current time in UTC, truncated to milliseconds."""
    return millisecond_utc(datetime.now(UTC))


def utc_text(moment: datetime) -> str:
    """A UTC time in the events' text form, to the millisecond: 2027-03-01T00:00:00.123Z."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_envelope(
    *,
    event_type: str,
    aggregate_id: str,
    aggregate_version: int,
    payload: dict[str, Any],
    correlation_id: str,
    causation_id: str | None = None,
    actor_id: str | None = None,
    occurred_at: datetime | None = None,
) -> EventEnvelope:
    """Build the envelope of a new event at the current schema version of its type."""
    from events.types import EVENT_TYPES

    spec = EVENT_TYPES[event_type]
    checked = spec.payload_model.model_validate(payload).model_dump(mode="json")
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=spec.schema_version,
        aggregate_type=spec.aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        occurred_at=occurred_at or utc_now(),
        correlation_id=correlation_id,
        causation_id=causation_id,
        actor_id=actor_id,
        payload=checked,
    )
