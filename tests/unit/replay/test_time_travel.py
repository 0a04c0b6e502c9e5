"""An aggregate as it was: the prefix of its events up to a version or a moment, folded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projectors.replay.domain.time_travel import AsOf, inspect_events, parse_moment
from readmodels.json_form import json_time
from readmodels.users import fold_user
from tests.integration.read_side.workload import new_campaign, new_user

START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def three_versions():  # type: ignore[no-untyped-def]
    campaign = new_campaign("owner-1", clock=START, name="Before")
    campaign.clock = START + timedelta(hours=1)
    campaign.then("CampaignUpdated", {"name": "After"})
    campaign.clock = START + timedelta(hours=2)
    campaign.then("CampaignPaused")  # not a valid lifecycle step, but the fold only records it
    return campaign


def test_as_of_a_version_folds_the_events_up_to_it() -> None:
    campaign = three_versions()
    inspection = inspect_events("campaign", campaign.events, AsOf(version=2))
    assert inspection is not None
    assert inspection.version == 2
    assert inspection.latest_version == 3
    assert inspection.state is not None
    assert (inspection.state["name"], inspection.state["status"]) == ("After", "draft")


def test_as_of_a_moment_folds_the_events_that_had_occurred_by_then() -> None:
    campaign = three_versions()
    at = AsOf(moment=START + timedelta(minutes=30))
    inspection = inspect_events("campaign", campaign.events, at)
    assert inspection is not None
    assert inspection.version == 1
    assert inspection.as_json()["as_of"] == {"timestamp": "2027-03-01T09:30:00Z"}


def test_a_moment_exactly_at_an_event_includes_it() -> None:
    campaign = three_versions()
    selected = AsOf(moment=campaign.events[1].occurred_at).select(campaign.events)
    assert [e.aggregate_version for e in selected] == [1, 2]


def test_without_a_version_or_moment_the_latest_state_is_shown() -> None:
    campaign = three_versions()
    inspection = inspect_events("campaign", campaign.events, AsOf())
    assert inspection is not None
    assert inspection.version == 3
    assert inspection.as_json()["as_of"] == {"latest": True}


def test_before_the_first_event_there_is_no_state_yet() -> None:
    campaign = three_versions()
    inspection = inspect_events("campaign", campaign.events, AsOf(moment=START - timedelta(days=1)))
    assert inspection is not None
    assert inspection.version == 0
    assert inspection.state is None


def test_an_aggregate_without_events_is_unknown() -> None:
    assert inspect_events("campaign", [], AsOf()) is None


def test_a_version_and_a_moment_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        AsOf(version=1, moment=START)
    with pytest.raises(ValueError, match="start at 1"):
        AsOf(version=0)


def test_a_moment_without_an_offset_is_utc() -> None:
    assert parse_moment("2027-03-01T09:30:00") == datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
    assert parse_moment("2027-03-01T10:30:00+01:00") == datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def test_the_inspection_lists_the_events_applied_with_their_payloads() -> None:
    campaign = three_versions()
    shown = inspect_events("campaign", campaign.events, AsOf(version=2))
    assert shown is not None
    events = shown.as_json()["events"]
    assert [(e["version"], e["event_type"]) for e in events] == [
        (1, "CampaignCreated"),
        (2, "CampaignUpdated"),
    ]
    assert events[1]["payload"]["name"] == "After"


def test_a_user_folds_into_the_profile_fields_in_document_order() -> None:
    user = new_user(email="Someone@Example.com")
    user.then("UserLoggedIn")
    user.then("UserRolesChanged", {"roles": ["user", "admin"]})
    profile = fold_user(user.events)
    assert profile is not None
    assert list(profile) == [
        "id",
        "email",
        "name",
        "roles",
        "version",
        "created_at",
        "updated_at",
        "last_login_at",
    ]
    assert profile["email"] == "someone@example.com"
    assert profile["roles"] == ["user", "admin"]
    assert profile["version"] == 3
    assert fold_user([]) is None


def test_a_password_change_moves_only_the_profiles_version_and_updated_at() -> None:
    user = new_user()
    user.then("UserLoggedIn")
    before = fold_user(user.events)
    changed = user.then("UserPasswordChanged")
    after = fold_user(user.events)
    assert before is not None and after is not None
    assert {k for k in after if after[k] != before[k]} <= {"version", "updated_at"}
    assert after["version"] == 3 and after["updated_at"] == json_time(changed.occurred_at)
