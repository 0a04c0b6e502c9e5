"""The campaign report fold: counts, timeline, budget, planned and actual (active-only) duration."""

from __future__ import annotations

import pytest

from tests.unit.workers.campaign_history import ADMIN, OWNER, T0, completed_campaign
from workers.domain.campaign_report import ReportNotPossible, build_campaign_report


def test_report_counts_events_by_type_and_lists_the_timeline_in_version_order() -> None:
    report = build_campaign_report(completed_campaign("c-1"))

    assert report.campaign_id == "c-1"
    assert report.owner_id == OWNER
    assert report.version == 6
    assert report.event_count == 6
    assert report.events_by_type == {
        "CampaignActivated": 2,
        "CampaignCompleted": 1,
        "CampaignCreated": 1,
        "CampaignPaused": 1,
        "CampaignUpdated": 1,
    }
    assert [(e.event_type, e.version) for e in report.timeline] == [
        ("CampaignCreated", 1),
        ("CampaignUpdated", 2),
        ("CampaignActivated", 3),
        ("CampaignPaused", 4),
        ("CampaignActivated", 5),
        ("CampaignCompleted", 6),
    ]
    assert report.timeline[3].actor_id == ADMIN
    assert report.timeline[0].occurred_at == T0


def test_report_budget_and_planned_duration_follow_the_latest_update() -> None:
    report = build_campaign_report(completed_campaign("c-1"))

    assert report.budget.amount == "3000.00"
    assert report.budget.currency == "EUR"
    assert report.planned_duration_seconds == 30 * 24 * 3600


def test_actual_duration_sums_active_periods_and_leaves_out_the_pause() -> None:
    report = build_campaign_report(completed_campaign("c-1"))

    assert report.first_activated_at is not None
    assert (report.completed_at - report.first_activated_at).total_seconds() == 120 * 60
    assert [p.seconds for p in report.active_periods] == [60 * 60, 30 * 60]
    assert report.actual_duration_seconds == 90 * 60
    assert report.paused_duration_seconds == 30 * 60


def test_report_is_refused_for_a_campaign_that_is_not_completed() -> None:
    with pytest.raises(ReportNotPossible, match="not CampaignCompleted"):
        build_campaign_report(completed_campaign("c-1")[:-1])


def test_report_is_refused_for_a_history_with_a_gap() -> None:
    history = completed_campaign("c-1")
    del history[2]
    with pytest.raises(ReportNotPossible, match="gap"):
        build_campaign_report(history)


def test_report_is_refused_without_the_creation_event() -> None:
    with pytest.raises(ReportNotPossible):
        build_campaign_report(completed_campaign("c-1")[1:])
    with pytest.raises(ReportNotPossible, match="no events"):
        build_campaign_report([])
