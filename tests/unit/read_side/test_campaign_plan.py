"""The version guard of the campaign projection, planned in memory: duplicates, gaps, refusals."""

from __future__ import annotations

from projectors.domain.campaign_plan import StoredCampaign, plan_campaign
from projectors.domain.outcomes import Outcome
from readmodels.campaigns import fold_campaign
from tests.integration.read_side.workload import new_campaign


def outcomes(plan) -> list[tuple[Outcome, int]]:  # type: ignore[no-untyped-def]
    return [(o.outcome, o.drained) for o in plan.outcomes]


def test_a_run_of_contiguous_events_folds_to_the_same_state_as_the_fold() -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignUpdated", {"name": "Renamed"})
    campaign.then("CampaignActivated")
    plan = plan_campaign(StoredCampaign(), campaign.events)
    assert outcomes(plan) == [(Outcome.APPLIED, 0)] * 3
    assert plan.state == fold_campaign(campaign.events)
    assert (plan.version, plan.owner, plan.deleted) == (3, "owner-1", False)
    assert [e.aggregate_version for e in plan.applied] == [1, 2, 3]
    assert plan.changed and not plan.parked


def test_duplicates_change_nothing() -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    stored = StoredCampaign(version=2, state=fold_campaign(campaign.events), owner="owner-1")
    plan = plan_campaign(stored, [campaign.events[1], campaign.events[0]])
    assert outcomes(plan) == [(Outcome.DUPLICATE, 0), (Outcome.DUPLICATE, 0)]
    assert not plan.changed
    assert plan.state is stored.state


def test_a_gap_parks_and_the_missing_version_drains_it_in_the_same_batch() -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    v1, v2, v3 = campaign.events
    plan = plan_campaign(StoredCampaign(), [v1, v3, v2])
    assert outcomes(plan) == [(Outcome.APPLIED, 0), (Outcome.PARKED, 0), (Outcome.APPLIED, 1)]
    assert plan.version == 3 and (plan.state or {})["status"] == "paused"
    assert not plan.parked and not plan.newly_parked


def test_parked_events_from_an_earlier_batch_are_drained_and_unparked() -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    v1, v2, v3 = campaign.events
    first = plan_campaign(StoredCampaign(), [v1, v3])
    assert outcomes(first) == [(Outcome.APPLIED, 0), (Outcome.PARKED, 0)]
    assert first.newly_parked == {3: v3}

    stored = StoredCampaign(version=1, state=first.state, owner="owner-1", parked={3: v3})
    second = plan_campaign(stored, [v2])
    assert outcomes(second) == [(Outcome.APPLIED, 1)]
    assert second.unparked == [3] and not second.parked
    assert [e.aggregate_version for e in second.applied] == [2, 3]


def test_an_event_before_any_creation_is_refused_and_what_follows_waits() -> None:
    orphan = new_campaign("owner-1")
    orphan.events.clear()
    update = orphan.then("CampaignUpdated", {"name": "no creation"})
    later = orphan.then("CampaignActivated")
    plan = plan_campaign(StoredCampaign(), [update, later])
    assert plan.outcomes[0].outcome is Outcome.FAILED
    assert "no creation event" in (plan.outcomes[0].error or "")
    assert plan.outcomes[1].outcome is Outcome.PARKED
    assert plan.version == 0 and plan.state is None


def test_a_deletion_leaves_a_tombstone_that_later_events_only_advance() -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignDeleted")
    plan = plan_campaign(StoredCampaign(), campaign.events)
    assert (plan.deleted, plan.state, plan.owner, plan.version) == (True, None, "owner-1", 2)

    tombstone = StoredCampaign(version=2, deleted=True, owner="owner-1")
    after = campaign.then("CampaignActivated")
    plan = plan_campaign(tombstone, [campaign.events[0], after])
    assert outcomes(plan) == [(Outcome.DUPLICATE, 0), (Outcome.APPLIED, 0)]
    assert (plan.deleted, plan.state, plan.version) == (True, None, 3)


def test_an_event_type_without_a_rule_fails_at_once() -> None:
    campaign = new_campaign("owner-1")
    stray = campaign.then("UserLoggedIn")
    plan = plan_campaign(StoredCampaign(), [campaign.events[0], stray])
    assert plan.outcomes[1].outcome is Outcome.FAILED
    assert "no rule for UserLoggedIn" in (plan.outcomes[1].error or "")


def test_two_parked_events_drained_at_once_are_counted_as_two() -> None:
    campaign = new_campaign("owner-1")
    for event_type in ("CampaignActivated", "CampaignPaused", "CampaignActivated"):
        campaign.then(event_type)
    v1, v2, v3, v4 = campaign.events
    plan = plan_campaign(StoredCampaign(), [v1, v4, v3, v2])
    assert outcomes(plan) == [
        (Outcome.APPLIED, 0),
        (Outcome.PARKED, 0),
        (Outcome.PARKED, 0),
        (Outcome.APPLIED, 2),
    ]
    assert [e.aggregate_version for e in plan.applied] == [1, 2, 3, 4]


def test_a_deletion_keeps_the_owner_the_stored_document_names() -> None:
    campaign = new_campaign("owner-1")
    deleted = campaign.then("CampaignDeleted")
    stored = StoredCampaign(version=1, state=fold_campaign(campaign.events[:1]))
    plan = plan_campaign(stored, [deleted])
    assert (plan.deleted, plan.owner, plan.state) == (True, "owner-1", None)
