"""Response shapes, for the OpenAPI document only.

Routes answer with stored JSON bytes (no model validation or serialisation on the read path);
these models describe what those bytes hold.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, WithJsonSchema

from events.envelope import EventEnvelope
from events.types import Budget, CampaignStatus, Channel, Role
from service_runtime.openapi import problem_responses

# The status inline, as the published document has always shown it (not a separate component).
StatusField = Annotated[
    str, WithJsonSchema({"type": "string", "enum": [status.value for status in CampaignStatus]})
]


class NextTransition(BaseModel):
    """What the scheduler does to the campaign next: activate it at starts_at (scheduled) or
    complete it at ends_at (active or paused)."""

    to: Literal["active", "completed"]
    at: AwareDatetime


class CampaignView(BaseModel):
    id: str
    owner_id: str
    name: str
    description: str
    channel: Channel
    budget: Budget
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    tags: list[str]
    status: StatusField
    next_transition: NextTransition | None = None
    version: int
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CampaignPage(BaseModel):
    items: list[CampaignView]
    next_cursor: str | None


class HistoryView(BaseModel):
    items: list[EventEnvelope]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class UserView(BaseModel):
    id: str
    email: str
    name: str
    roles: list[Role]
    version: int
    created_at: AwareDatetime
    updated_at: AwareDatetime
    last_login_at: AwareDatetime | None


class CampaignCounts(BaseModel):
    total: int
    by_status: dict[str, int]
    by_channel: dict[str, int]
    deleted: int


class UserCounts(BaseModel):
    total: int


class MinuteCount(BaseModel):
    minute: AwareDatetime
    count: int


class StatsView(BaseModel):
    campaigns: CampaignCounts
    budget_by_currency: dict[str, str]
    users: UserCounts
    events_per_minute: list[MinuteCount]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for RFC 9457 problems (the shared schema in components)."""
    return problem_responses(*statuses)
