"""Campaign reports: on CampaignCompleted, fold the campaign's history from the log and store it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from events import EventEnvelope
from readmodels.reports import CampaignReport
from workers import metrics
from workers.application.retries import PermanentFailure
from workers.domain.campaign_report import build_campaign_report

BUILT = "built"
UNCHANGED = "unchanged"


class IncompleteHistory(Exception):
    """The log does not reach the completed version yet; worth another attempt."""


class EventLog(Protocol):
    async def history(self, campaign_id: str, up_to_version: int) -> Sequence[EventEnvelope]:
        """The campaign's events with versions 1..up_to_version, in version order."""


class ReportStore(Protocol):
    async def save(self, report: CampaignReport) -> bool:
        """Store the report unless one of the same or a later version is there; True if stored."""


class CampaignReports:
    """The reports worker's handler: one stored report per completed campaign version."""

    name = "reports"
    handles = frozenset({"CampaignCompleted"})

    def __init__(self, log: EventLog, store: ReportStore) -> None:
        self.log = log
        self.store = store

    async def __call__(self, event: EventEnvelope) -> str:
        history = await self.log.history(event.aggregate_id, event.aggregate_version)
        if len(history) < event.aggregate_version:
            raise IncompleteHistory(
                f"the log has {len(history)} events of campaign {event.aggregate_id}, "
                f"the completion is version {event.aggregate_version}"
            )
        if history[-1].event_id != event.event_id:
            raise PermanentFailure(
                f"version {event.aggregate_version} of campaign {event.aggregate_id} in the log "
                f"is event {history[-1].event_id}, not the delivered {event.event_id}"
            )
        try:
            report = build_campaign_report(history)
        except ValueError as exc:  # ReportNotPossible, or a payload the log holds but the contract refuses
            raise PermanentFailure(f"cannot build the report: {exc}") from exc
        if not await self.store.save(report):
            return UNCHANGED
        metrics.REPORTS_BUILT.labels(self.name).inc()
        return BUILT
