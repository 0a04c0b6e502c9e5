"""Stats: exact decimal budgets in integer counters, and what each event moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from query_api.domain.stats import stats_document, window
from readmodels.stats import join_amount, minute_bucket, split_amount, stats_change_args
from tests.integration.read_side.workload import new_campaign, new_user


def test_amounts_split_into_units_and_ten_thousandths_and_sum_back_exactly() -> None:
    assert split_amount("1234.5") == ("1234", "5000")
    assert split_amount("0.0001") == ("0", "1")
    assert split_amount("15") == ("15", "0")
    parts = [split_amount(a) for a in ("0.10", "0.20", "999999999999999.9999")]
    units, frac = sum(int(u) for u, _ in parts), sum(int(f) for _, f in parts)
    assert join_amount(units, frac) == "1000000000000000.2999"
    assert join_amount(2600, 5000) == "2600.50"
    assert join_amount(0, 0) == "0.00"


def test_events_are_counted_in_the_minute_they_occurred_whatever_came_before() -> None:
    # The minute's text is kept per minute: the last millisecond of one minute and the first of
    # the next, in any order, each get their own.
    start = datetime(2027, 1, 1, 12, 0, 59, 999_000, tzinfo=UTC)
    moments = [start + timedelta(milliseconds=n) for n in (0, 1, 60_000, 1, 0, 3_600_001, 59_999)]
    campaign = new_campaign("o")
    for moment in moments:
        campaign.clock = moment - timedelta(milliseconds=1)
        event = campaign.then("CampaignActivated")
        assert minute_bucket(event) == moment.strftime("%Y-%m-%dT%H:%M")


def test_each_event_says_what_it_changes() -> None:
    campaign = new_campaign("o", channel="sms", budget={"amount": "10.25", "currency": "USD"})
    minute = campaign.events[0].occurred_at.strftime("%Y-%m-%dT%H:%M")
    created = ["campaign", minute, "status", "draft", "channel", "sms"]
    assert stats_change_args(campaign.events[0]) == [
        *created,
        "currency",
        "USD",
        "units",
        "10",
        "frac",
        "2500",
    ]
    assert stats_change_args(campaign.then("CampaignUpdated", {"name": "only the name"}))[2:] == []
    assert stats_change_args(campaign.then("CampaignActivated"))[2:] == ["status", "active"]
    assert stats_change_args(campaign.then("CampaignDeleted"))[2:] == ["deleted", "1"]
    user = new_user()
    assert stats_change_args(user.events[0])[::2] == ["user", "1"]
    assert stats_change_args(user.then("UserLoggedIn"))[2] == "0"


def test_stats_document_counts_live_campaigns_and_hides_emptied_currencies() -> None:
    minutes = window(datetime(2027, 1, 1, 12, 30, 45, tzinfo=UTC))
    assert len(minutes) == 60
    assert minutes[-1] == datetime(2027, 1, 1, 12, 30, tzinfo=UTC)
    document = stats_document(
        {
            "campaigns.total": 2,
            "status:active": 2,
            "channel:sms": 2,
            "campaigns.deleted": 1,
            "users.total": 3,
        },
        {"EUR:units": 12, "EUR:frac": 15000, "USD:units": 0, "USD:frac": 0},
        minutes,
        [0] * 59 + [7],
    )
    assert document["campaigns"] == {
        "total": 2,
        "by_status": {"draft": 0, "scheduled": 0, "active": 2, "paused": 0, "completed": 0},
        "by_channel": {"email": 0, "sms": 2, "push": 0, "social": 0},
        "deleted": 1,
    }
    assert document["budget_by_currency"] == {"EUR": "13.50"}
    assert document["users"] == {"total": 3}
    assert document["events_per_minute"][-1] == {"minute": "2027-01-01T12:30:00Z", "count": 7}


def test_scheduling_moves_a_campaign_between_draft_and_scheduled_in_the_counters() -> None:
    campaign = new_campaign("owner-1")
    created = campaign.events[0].payload
    scheduled = campaign.then(
        "CampaignScheduled", {"starts_at": created["starts_at"], "ends_at": created["ends_at"]}
    )
    unscheduled = campaign.then("CampaignUnscheduled")
    assert stats_change_args(scheduled)[2:] == ["status", "scheduled"]
    assert stats_change_args(unscheduled)[2:] == ["status", "draft"]
