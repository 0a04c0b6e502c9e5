"""Every event type: its aggregate, its current schema version and its payload schema."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

Channel = Literal["email", "sms", "push", "social"]


# Where a campaign is in its lifecycle (the command domain's rules move it between them).
class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    DELETED = "deleted"


Role = Literal["user", "admin"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# An amount of money: a decimal string (no sign, up to 4 decimals) and an ISO 4217 code. The command
# domain's `Money` too: it builds one only from values it has checked itself. (No docstring: it
# would become the schema's description in the published documents.)
class Budget(_Payload):
    amount: str = Field(pattern=r"^\d{1,15}(\.\d{1,4})?$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    @property
    def decimal_amount(self) -> Decimal:
        return Decimal(self.amount)


class UserRegistered(_Payload):
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    roles: list[Role]


class UserLoggedIn(_Payload):
    pass


class UserRolesChanged(_Payload):
    roles: list[Role]


class UserPasswordChanged(_Payload):
    """The user changed their password (the hash is never in an event); every session that
    existed before it was ended."""


class CampaignCreated(_Payload):
    owner_id: str
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    channel: Channel
    budget: Budget
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    tags: list[str] = Field(default_factory=list, max_length=50)
    status: Literal["draft"] = "draft"


class CampaignUpdated(_Payload):
    """Only the fields that changed are present."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    channel: Channel | None = None
    budget: Budget | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    tags: list[str] | None = Field(default=None, max_length=50)


class CampaignScheduled(_Payload):
    """The campaign will be activated at `starts_at` and completed at `ends_at` by the scheduler.

    Both are the campaign's own dates as they stood when it was scheduled (an update may move them
    later; the campaign's CampaignUpdated events say so)."""

    starts_at: AwareDatetime
    ends_at: AwareDatetime


class CampaignUnscheduled(_Payload):
    """Back to draft: the pending activation is cancelled."""


class TimerFiring(_Payload):
    """Which durable timer caused a transition, when it was due, and how late it fired."""

    timer_id: str = Field(min_length=1, max_length=200)
    due_at: AwareDatetime
    lateness_ms: int = Field(ge=0)


class CampaignActivated(_Payload):
    """`timer` is present only when the scheduler fired it (v2; v1 had no fields)."""

    timer: TimerFiring | None = None


class CampaignPaused(_Payload):
    pass


class CampaignCompleted(_Payload):
    """`timer` is present only when the scheduler fired it (v2; v1 had no fields)."""

    timer: TimerFiring | None = None


class CampaignDeleted(_Payload):
    pass


@dataclass(frozen=True)
class EventTypeSpec:
    name: str
    aggregate_type: Literal["user", "campaign"]
    schema_version: int
    payload_model: type[_Payload]


# Run once, at import, before mutmut forks a worker: a mutant of it could never take effect.
def _spec(
    model: type[_Payload],
    aggregate: Literal["user", "campaign"],
    version: int = 1,  # pragma: no mutate
) -> EventTypeSpec:
    return EventTypeSpec(model.__name__, aggregate, version, model)  # pragma: no mutate


EVENT_TYPES: dict[str, EventTypeSpec] = {
    spec.name: spec
    for spec in (
        _spec(UserRegistered, "user"),
        _spec(UserLoggedIn, "user"),
        _spec(UserRolesChanged, "user"),
        _spec(UserPasswordChanged, "user"),
        # v2: budget became {amount, currency} (v1 had a float `budget` in EUR).
        _spec(CampaignCreated, "campaign", version=2),
        _spec(CampaignUpdated, "campaign"),
        _spec(CampaignScheduled, "campaign"),
        _spec(CampaignUnscheduled, "campaign"),
        # v2: an optional `timer` (the scheduler's firing); v1 payloads were empty.
        _spec(CampaignActivated, "campaign", version=2),
        _spec(CampaignPaused, "campaign"),
        _spec(CampaignCompleted, "campaign", version=2),
        _spec(CampaignDeleted, "campaign"),
    )
}
