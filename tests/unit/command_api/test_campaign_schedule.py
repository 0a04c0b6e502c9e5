"""Scheduling in the campaign aggregate: schedule/unschedule, the next transition, its durable
timer, and the scheduler's firing (once, never early, never for a stale timer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from command_api.domain.campaign import Campaign, CampaignChanges, CampaignDetails, CampaignStatus
from command_api.domain.errors import InvalidTransition

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
STARTS = NOW + timedelta(hours=1)
ENDS = NOW + timedelta(hours=5)


def draft(starts_at: datetime = STARTS, ends_at: datetime = ENDS) -> Campaign:
    details = CampaignDetails.parse(
        name="Spring",
        description="",
        channel="email",
        budget_amount="1.00",
        budget_currency="EUR",
        starts_at=starts_at,
        ends_at=ends_at,
        tags=[],
    )
    campaign = Campaign.create(campaign_id="c-1", owner_id="owner", details=details, now=NOW)
    campaign.collect_events()
    return campaign


def scheduled() -> Campaign:
    campaign = draft()
    campaign.schedule(NOW)
    campaign.collect_events()
    return campaign


def test_scheduling_a_draft_records_campaign_scheduled_and_sets_an_activation_timer() -> None:
    campaign = draft()
    campaign.schedule(NOW)
    assert campaign.status is CampaignStatus.SCHEDULED
    assert campaign.moves_timer()
    timer = campaign.due_timer()
    assert timer is not None
    assert (timer.action, timer.target_at, timer.due_at) == ("activate", STARTS, STARTS)
    assert timer.timer_id == "timer:c-1:v2:activate"
    [event] = campaign.collect_events()
    assert event.event_type == "CampaignScheduled"
    assert event.payload.model_dump() == {"starts_at": STARTS, "ends_at": ENDS}


def test_scheduling_after_starts_at_activates_in_the_same_command() -> None:
    campaign = draft(starts_at=NOW - timedelta(minutes=5))
    campaign.schedule(NOW)
    assert campaign.status is CampaignStatus.ACTIVE
    assert [e.event_type for e in campaign.pending_events] == ["CampaignScheduled", "CampaignActivated"]
    timer = campaign.due_timer()
    assert timer is not None
    assert (timer.action, timer.due_at) == ("complete", ENDS)


def test_scheduling_once_ends_at_has_passed_is_refused() -> None:
    campaign = draft(starts_at=NOW - timedelta(hours=2), ends_at=NOW - timedelta(hours=1))
    with pytest.raises(InvalidTransition, match="ends_at has passed"):
        campaign.schedule(NOW)
    assert campaign.status is CampaignStatus.DRAFT
    assert campaign.pending_events == []


@pytest.mark.parametrize("before", [CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED])
def test_activating_by_hand_once_ends_at_has_passed_is_refused(before: CampaignStatus) -> None:
    campaign = scheduled() if before is CampaignStatus.SCHEDULED else draft()
    if before is CampaignStatus.PAUSED:
        campaign.activate(NOW)
        campaign.pause(NOW)
        campaign.collect_events()
    version = campaign.version
    with pytest.raises(InvalidTransition, match="cannot activate the campaign: its ends_at has passed"):
        campaign.apply_lifecycle("activate", ENDS)
    assert (campaign.status, campaign.version, campaign.pending_events) == (before, version, [])
    campaign.apply_lifecycle("activate", ENDS - timedelta(milliseconds=1))
    assert campaign.status is CampaignStatus.ACTIVE


def test_an_activation_timer_fired_after_ends_at_still_activates_then_completion_is_due() -> None:
    campaign = scheduled()
    timer = campaign.due_timer()
    assert timer is not None
    assert campaign.fire(timer, ENDS + timedelta(hours=1))  # the scheduler was down all along
    assert campaign.status is CampaignStatus.ACTIVE
    completion = campaign.due_timer()
    assert completion is not None and completion.action == "complete"


def test_unscheduling_returns_to_draft_and_drops_the_timer() -> None:
    campaign = scheduled()
    campaign.unschedule(NOW)
    assert campaign.status is CampaignStatus.DRAFT
    assert campaign.moves_timer()
    assert campaign.due_timer() is None
    with pytest.raises(InvalidTransition, match="cannot unschedule the campaign: it is draft"):
        campaign.unschedule(NOW)


def test_the_next_transition_follows_the_status() -> None:
    campaign = draft()
    assert campaign.next_transition() is None
    campaign.schedule(NOW)
    assert campaign.next_transition() is not None
    assert campaign.next_transition().to is CampaignStatus.ACTIVE  # type: ignore[union-attr]
    campaign.activate(NOW)
    campaign.pause(NOW)
    paused = campaign.next_transition()
    assert paused is not None
    assert (paused.action, paused.at) == ("complete", ENDS)
    campaign.complete(NOW)
    assert campaign.next_transition() is None


def test_moving_starts_at_reschedules_and_a_rename_leaves_the_timer_alone() -> None:
    campaign = scheduled()
    campaign.update(CampaignChanges(name="Renamed"), NOW)
    assert not campaign.moves_timer()
    campaign.collect_events()
    later = STARTS + timedelta(minutes=30)
    campaign.update(CampaignChanges(starts_at=later), NOW)
    assert campaign.moves_timer()
    timer = campaign.due_timer()
    assert timer is not None
    assert timer.due_at == later


def test_a_timer_moved_into_the_past_is_due_when_it_was_set() -> None:
    campaign = scheduled()
    set_at = NOW + timedelta(minutes=10)
    campaign.update(CampaignChanges(starts_at=NOW - timedelta(days=1)), set_at)
    timer = campaign.due_timer()
    assert timer is not None
    # Its lateness will be the scheduler's own, not the day the user moved it back.
    assert timer.due_at == set_at


def test_deleting_a_scheduled_campaign_cancels_its_timer() -> None:
    campaign = scheduled()
    campaign.delete(NOW)
    assert campaign.moves_timer()
    assert campaign.due_timer() is None


def test_firing_a_due_timer_records_the_transition_with_the_timer_and_its_lateness() -> None:
    campaign = scheduled()
    timer = campaign.due_timer()
    assert timer is not None
    fired_at = STARTS + timedelta(milliseconds=250)
    assert campaign.fire(timer, fired_at)
    assert campaign.status is CampaignStatus.ACTIVE
    [event] = campaign.collect_events()
    assert event.event_type == "CampaignActivated"
    assert event.occurred_at == fired_at
    assert event.payload.model_dump(mode="json") == {
        "timer": {"timer_id": timer.timer_id, "due_at": "2027-01-10T13:00:00Z", "lateness_ms": 250}
    }


def test_firing_twice_records_one_transition() -> None:
    campaign = scheduled()
    timer = campaign.due_timer()
    assert timer is not None
    assert campaign.fire(timer, STARTS)
    assert not campaign.fire(timer, STARTS + timedelta(seconds=1))
    assert [e.event_type for e in campaign.collect_events()] == ["CampaignActivated"]


def test_a_timer_is_not_fired_before_it_is_due() -> None:
    campaign = scheduled()
    timer = campaign.due_timer()
    assert timer is not None
    assert not campaign.fire(timer, STARTS - timedelta(milliseconds=1))
    assert campaign.status is CampaignStatus.SCHEDULED
    assert campaign.pending_events == []


def test_a_stale_timer_fires_nothing() -> None:
    campaign = scheduled()
    stale = campaign.due_timer()
    assert stale is not None
    campaign.update(CampaignChanges(starts_at=STARTS + timedelta(hours=1)), NOW)
    campaign.collect_events()
    assert not campaign.fire(stale, STARTS + timedelta(minutes=1))
    campaign.unschedule(NOW)
    campaign.collect_events()
    assert not campaign.fire(stale, ENDS)
    assert campaign.status is CampaignStatus.DRAFT


def test_the_completion_timer_completes_an_active_or_paused_campaign() -> None:
    for pause in (False, True):
        campaign = draft()
        campaign.activate(NOW)
        if pause:
            campaign.pause(NOW)
        timer = campaign.due_timer()
        campaign.collect_events()
        assert timer is not None
        assert timer.action == "complete"
        assert campaign.fire(timer, ENDS)
        assert campaign.status is CampaignStatus.COMPLETED
        assert campaign.due_timer() is None
