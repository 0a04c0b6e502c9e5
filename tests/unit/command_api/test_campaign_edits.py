"""The campaign aggregate field by field: each edit alone changes state and is recorded, every
event carries the command's own time, every limit holds at its exact boundary, and every
refusal names its field with the reason the API passes on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from command_api.adapters.mongo_unit_of_work import _envelope
from command_api.domain.campaign import (
    Actor,
    Campaign,
    CampaignChanges,
    CampaignDetails,
    CampaignStatus,
    Money,
)
from command_api.domain.errors import AggregateGone, FieldError, InvalidInput, InvalidTransition
from events.types import Budget, CampaignCreated
from tests.support.factories import ENDS_AT, STARTS_AT, campaign_fields

# A command's clock in +02:00 with sub-millisecond digits; what is kept is its UTC millisecond.
NOW = datetime(2027, 1, 10, 14, 0, 0, 999_500, tzinfo=timezone(timedelta(hours=2)))
NOW_MS = datetime(2027, 1, 10, 12, 0, 0, 999_000, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
LATER_MS = NOW_MS + timedelta(hours=1)


def created(**overrides: Any) -> Campaign:
    details = CampaignDetails.parse(**campaign_fields(**overrides))
    return Campaign.create(campaign_id="c-1", owner_id="owner", details=details, now=NOW)


def refusals(excinfo: pytest.ExceptionInfo[InvalidInput]) -> list[FieldError]:
    return excinfo.value.errors


def is_utc(value: datetime) -> bool:
    return value.tzinfo is UTC


def test_campaign_created_records_every_field_and_the_command_time_in_utc_milliseconds() -> None:
    campaign = created(description="the long story", tags=["Launch", "Q3"])
    [event] = campaign.collect_events()
    assert event.payload == CampaignCreated(
        owner_id="owner",
        name="Spring launch",
        description="the long story",
        channel="email",
        budget=Budget(amount="2500.00", currency="EUR"),
        starts_at=STARTS_AT,
        ends_at=ENDS_AT,
        tags=["launch", "q3"],
    )
    assert (event.aggregate_id, event.aggregate_version, event.occurred_at) == ("c-1", 1, NOW_MS)
    assert (campaign.id, campaign.created_at, campaign.updated_at) == ("c-1", NOW_MS, NOW_MS)
    assert is_utc(event.occurred_at) and is_utc(campaign.created_at)


# change -> (the CampaignUpdated payload, the details it leaves)
ONE_FIELD_EDITS: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"name": " Summer launch "}, {"name": "Summer launch"}, {"name": "Summer launch"}),
    ({"description": "second"}, {"description": "second"}, {"description": "second"}),
    ({"channel": "sms"}, {"channel": "sms"}, {"channel": "sms"}),
    (
        {"starts_at": datetime(2099, 3, 2, 2, tzinfo=timezone(timedelta(hours=2)))},
        {"starts_at": "2099-03-02T00:00:00Z"},
        {"starts_at": datetime(2099, 3, 2, tzinfo=UTC)},
    ),
    (
        {"ends_at": datetime(2099, 4, 1, tzinfo=UTC)},
        {"ends_at": "2099-04-01T00:00:00Z"},
        {"ends_at": datetime(2099, 4, 1, tzinfo=UTC)},
    ),
    ({"tags": ["Autumn", "autumn", " q3 "]}, {"tags": ["autumn", "q3"]}, {"tags": ("autumn", "q3")}),
    (
        {"budget_amount": "3000.00"},
        {"budget": {"amount": "3000.00", "currency": "EUR"}},
        {"budget": Money(amount="3000.00", currency="EUR")},
    ),
    (
        {"budget_currency": "USD"},
        {"budget": {"amount": "2500.00", "currency": "USD"}},
        {"budget": Money(amount="2500.00", currency="USD")},
    ),
]


@pytest.mark.parametrize(("change", "payload", "details"), ONE_FIELD_EDITS, ids=lambda v: str(v)[:40])
def test_an_edit_of_one_field_alone_changes_that_field_and_records_it(
    change: dict[str, Any], payload: dict[str, Any], details: dict[str, Any]
) -> None:
    campaign = created()
    campaign.collect_events()
    before = campaign.details
    campaign.update(CampaignChanges(**change), LATER)
    [event] = campaign.collect_events()
    assert event.payload.model_dump(mode="json", exclude_unset=True) == payload
    assert campaign.details == replace(before, **details)
    assert (campaign.version, campaign.updated_at, event.occurred_at) == (2, LATER_MS, LATER_MS)
    assert campaign.created_at == NOW_MS


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "  "}, "name"),
        ({"description": "x" * 5001}, "description"),
        ({"channel": "fax"}, "channel"),
        ({"starts_at": datetime(2027, 3, 2)}, "starts_at"),
        ({"ends_at": datetime(2027, 4, 1)}, "ends_at"),
        ({"tags": ["ok", "x" * 51]}, "tags.1"),
        ({"budget_amount": "-1"}, "budget.amount"),
        ({"budget_currency": "eur"}, "budget.currency"),
    ],
)
def test_an_edit_refused_names_its_field_and_leaves_the_campaign_as_it_was(
    change: dict[str, Any], field: str
) -> None:
    campaign = created()
    campaign.collect_events()
    before = campaign.details
    with pytest.raises(InvalidInput) as excinfo:
        campaign.update(CampaignChanges(**change), LATER)
    assert [e.field for e in refusals(excinfo)] == [field]
    assert campaign.details == before and campaign.version == 1 and not campaign.pending_events


# fields of CampaignDetails.parse -> the one refusal, exactly as the API reports it
REFUSALS: list[tuple[dict[str, Any], FieldError]] = [
    (
        {"name": " "},
        FieldError("name", "must be 1 to 200 characters (not counting surrounding spaces)"),
    ),
    ({"description": "x" * 5001}, FieldError("description", "must be at most 5000 characters")),
    ({"channel": "fax"}, FieldError("channel", "must be one of email, sms, push, social")),
    (
        {"budget_amount": "1e3"},
        FieldError(
            "budget.amount",
            "must be a decimal string such as '1500.00' (no sign, up to 15 digits and 4 decimals)",
        ),
    ),
    (
        {"budget_currency": "ZZZ"},
        FieldError("budget.currency", "must be an ISO 4217 code of three capital letters, such as EUR"),
    ),
    (
        {"starts_at": datetime(2027, 3, 1)},
        FieldError("starts_at", "must carry a time zone, e.g. 2027-03-01T00:00:00Z"),
    ),
    (
        {"starts_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(minutes=12)))},
        FieldError("starts_at", "must fall between the years 1 and 9999 in UTC"),
    ),
    ({"ends_at": STARTS_AT}, FieldError("ends_at", "must be after starts_at")),
    ({"tags": ["t"] * 51}, FieldError("tags", "at most 50 tags")),
    ({"tags": ["ok", " "]}, FieldError("tags.1", "each tag must be 1 to 50 characters")),
]


@pytest.mark.parametrize(("overrides", "refusal"), REFUSALS, ids=lambda v: getattr(v, "field", ""))
def test_each_refusal_names_the_field_and_says_why(overrides: dict[str, Any], refusal: FieldError) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        CampaignDetails.parse(**campaign_fields(**overrides))
    assert refusals(excinfo) == [refusal]
    assert str(excinfo.value) == f"{refusal.field}: {refusal.reason}"


def test_several_refusals_are_joined_in_one_message() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        CampaignDetails.parse(**campaign_fields(name="", channel="fax"))
    assert str(excinfo.value) == (
        "name: must be 1 to 200 characters (not counting surrounding spaces); "
        "channel: must be one of email, sms, push, social"
    )


class _NoOffset(tzinfo):
    """A time zone that does not know its offset: as good as none."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


def test_a_time_zone_without_an_offset_counts_as_none() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        CampaignDetails.parse(**campaign_fields(ends_at=datetime(2027, 3, 31, tzinfo=_NoOffset())))
    assert [e.field for e in refusals(excinfo)] == ["ends_at"]


# (field, the longest value accepted, the shortest refused); names are trimmed first
LENGTH_LIMITS = [
    ("name", " " + "n" * 200 + " ", "n" * 201),
    ("description", "d" * 5000, "d" * 5001),
    ("tags", ["t"] * 50, [f"t{n}" for n in range(51)]),
    ("tags", ["t" * 50], ["t" * 51]),
    ("budget_amount", "9" * 15 + ".9999", "9" * 16),
    ("budget_amount", "1.1234", "1.12345"),
]


@pytest.mark.parametrize(("field", "longest", "too_long"), LENGTH_LIMITS)
def test_every_length_limit_holds_at_its_exact_boundary(field: str, longest: Any, too_long: Any) -> None:
    CampaignDetails.parse(**campaign_fields(**{field: longest}))
    with pytest.raises(InvalidInput):
        CampaignDetails.parse(**campaign_fields(**{field: too_long}))
    campaign = created()
    campaign.update(CampaignChanges(**{field: longest}), LATER)
    with pytest.raises(InvalidInput):
        campaign.update(CampaignChanges(**{field: too_long}), LATER)


def test_one_character_names_and_tags_and_a_one_millisecond_schedule_are_accepted() -> None:
    details = CampaignDetails.parse(
        **campaign_fields(name="n", tags=["t"], ends_at=STARTS_AT + timedelta(milliseconds=1))
    )
    assert (details.name, details.tags) == ("n", ("t",))


def test_each_lifecycle_method_moves_the_status_and_records_at_the_command_time() -> None:
    campaign = created()
    campaign.collect_events()
    for move, status in (
        (campaign.activate, CampaignStatus.ACTIVE),
        (campaign.pause, CampaignStatus.PAUSED),
        (campaign.complete, CampaignStatus.COMPLETED),
    ):
        move(LATER)
        assert campaign.status is status
    events = campaign.collect_events()
    assert [e.event_type for e in events] == ["CampaignActivated", "CampaignPaused", "CampaignCompleted"]
    assert [e.occurred_at for e in events] == [LATER_MS] * 3
    assert campaign.updated_at == LATER_MS and is_utc(campaign.updated_at)


def test_a_deletion_is_recorded_at_the_command_time() -> None:
    campaign = created()
    campaign.collect_events()
    campaign.delete(LATER)
    [event] = campaign.collect_events()
    assert (event.event_type, event.occurred_at, campaign.updated_at) == (
        "CampaignDeleted",
        LATER_MS,
        LATER_MS,
    )


def test_refused_commands_say_why() -> None:
    campaign = created()
    with pytest.raises(InvalidTransition) as moved:
        campaign.pause(LATER)
    assert str(moved.value) == "cannot pause the campaign: it is draft (allowed from active)"
    with pytest.raises(InvalidTransition) as finished:
        campaign.complete(LATER)
    assert str(finished.value) == "cannot complete the campaign: it is draft (allowed from active, paused)"
    with pytest.raises(InvalidInput) as empty:
        campaign.update(CampaignChanges(), LATER)
    assert refusals(empty) == [FieldError("body", "name at least one field to change")]
    with pytest.raises(ValueError, match=r"^unknown lifecycle action 'restart'$"):
        campaign.apply_lifecycle("restart", LATER)

    campaign.activate(LATER)
    campaign.complete(LATER)
    with pytest.raises(InvalidTransition) as completed:
        campaign.update(CampaignChanges(name="late"), LATER)
    assert str(completed.value) == "a completed campaign can no longer be changed"

    campaign.delete(LATER)
    with pytest.raises(AggregateGone) as gone:
        campaign.activate(LATER)
    assert str(gone.value) == "campaign c-1 was deleted"


def test_a_recorded_event_reaches_its_envelope_with_the_command_time_not_now() -> None:
    campaign = created()
    [event] = campaign.collect_events()
    assert _envelope(event, actor_id="owner").occurred_at == NOW_MS


def test_an_admin_who_is_not_the_owner_may_change_a_campaign() -> None:
    campaign = created()
    assert campaign.may_be_changed_by(Actor("someone-else", is_admin=True))
    assert not campaign.may_be_changed_by(Actor("someone-else"))
