"""The report of a completed campaign, as the reports worker stores it and the query API serves it."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from events.types import Budget


class TimelineEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_type: str
    version: int
    occurred_at: AwareDatetime
    actor_id: str | None


class ActivePeriod(BaseModel):
    model_config = ConfigDict(frozen=True)

    started_at: AwareDatetime
    ended_at: AwareDatetime
    seconds: float


class CampaignReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    campaign_id: str
    owner_id: str
    name: str
    channel: str
    status: Literal["completed"] = "completed"
    version: int
    budget: Budget
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    planned_duration_seconds: float
    first_activated_at: AwareDatetime | None
    completed_at: AwareDatetime
    active_periods: list[ActivePeriod]
    actual_duration_seconds: float
    paused_duration_seconds: float
    event_count: int
    events_by_type: dict[str, int]
    timeline: list[TimelineEntry]
