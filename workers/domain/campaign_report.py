"""The report of a completed campaign: a pure fold over its events, in version order.

Durations, as chosen here:

- planned duration: `ends_at - starts_at` as they stood when the campaign completed (updates count);
- actual duration: the sum of the campaign's active periods, each from a `CampaignActivated` to the
  next `CampaignPaused` or `CampaignCompleted`; time spent paused is not counted, and is reported
  separately as `paused_duration_seconds` (so actual + paused = first activation to completion).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from events.envelope import EventEnvelope
from events.types import CampaignCreated, CampaignUpdated
from readmodels.reports import ActivePeriod, CampaignReport, TimelineEntry


class ReportNotPossible(ValueError):
    """The history is not that of a completed campaign (empty, gapped, or not ending in completion)."""


def build_campaign_report(history: Sequence[EventEnvelope]) -> CampaignReport:
    """Fold a campaign's events, versions 1..N with N its `CampaignCompleted`, into its report."""
    if not history:
        raise ReportNotPossible("no events")
    for expected, event in enumerate(history, start=1):
        if event.aggregate_version != expected:
            raise ReportNotPossible(
                f"history has a gap: version {event.aggregate_version} where {expected} was expected"
            )
    first, last = history[0], history[-1]
    if first.event_type != "CampaignCreated":
        raise ReportNotPossible(f"history starts with {first.event_type}, not CampaignCreated")
    if last.event_type != "CampaignCompleted":
        raise ReportNotPossible(f"history ends with {last.event_type}, not CampaignCompleted")

    created = CampaignCreated.model_validate(first.payload)
    name, channel, budget = created.name, created.channel, created.budget
    starts_at, ends_at = created.starts_at, created.ends_at
    periods: list[ActivePeriod] = []
    first_activated_at: datetime | None = None
    active_since: datetime | None = None

    for event in history[1:]:
        if event.event_type == "CampaignUpdated":
            changed = CampaignUpdated.model_validate(event.payload)
            name = changed.name or name
            channel = changed.channel or channel
            budget = changed.budget or budget
            starts_at = changed.starts_at or starts_at
            ends_at = changed.ends_at or ends_at
        elif event.event_type == "CampaignActivated":
            if first_activated_at is None:
                first_activated_at = event.occurred_at
            # A repeated activation without a pause in between keeps the period that is open.
            active_since = active_since or event.occurred_at
        elif event.event_type in ("CampaignPaused", "CampaignCompleted") and active_since is not None:
            periods.append(_period(active_since, event.occurred_at))
            active_since = None

    completed_at = last.occurred_at
    active = sum(p.seconds for p in periods)
    elapsed = (completed_at - first_activated_at).total_seconds() if first_activated_at else 0.0
    return CampaignReport(
        campaign_id=first.aggregate_id,
        owner_id=created.owner_id,
        name=name,
        channel=channel,
        version=last.aggregate_version,
        budget=budget,
        starts_at=starts_at,
        ends_at=ends_at,
        planned_duration_seconds=(ends_at - starts_at).total_seconds(),
        first_activated_at=first_activated_at,
        completed_at=completed_at,
        active_periods=periods,
        actual_duration_seconds=active,
        paused_duration_seconds=max(elapsed - active, 0.0),
        event_count=len(history),
        events_by_type=dict(sorted(Counter(e.event_type for e in history).items())),
        timeline=[
            TimelineEntry(
                event_type=e.event_type,
                version=e.aggregate_version,
                occurred_at=e.occurred_at,
                actor_id=e.actor_id,
            )
            for e in history
        ],
    )


def _period(started_at: datetime, ended_at: datetime) -> ActivePeriod:
    # Clocks of different command API processes may disagree slightly; a period is never negative.
    seconds = max((ended_at - started_at).total_seconds(), 0.0)
    return ActivePeriod(started_at=started_at, ended_at=ended_at, seconds=seconds)
