"""What each campaign event does to the read model, and the order of its indexes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import orjson

from events import encode_event
from readmodels.campaigns import (
    CAMPAIGN_FIELDS,
    campaign_document,
    campaign_field_changes,
    campaign_memberships,
    filter_memberships,
    filter_moves,
    fold_campaign,
    member_campaign_id,
    membership_moves,
    name_sort_value,
    next_campaign_state,
    packed_from_text,
    packed_id,
    packed_name_member,
    packed_time_member,
    set_member,
    sort_member,
    text_from_packed,
    time_sort_value,
)
from readmodels.json_form import epoch_millis, json_time
from tests.integration.read_side.workload import new_campaign


def test_creation_sets_every_field_as_draft_with_created_and_updated_at_its_time() -> None:
    campaign = new_campaign("owner-1", tags=["a"])
    state = fold_campaign(campaign.events)
    wire = orjson.loads(encode_event(campaign.events[0]))
    assert state is not None
    assert list(state) == list(CAMPAIGN_FIELDS)
    assert state["status"] == "draft"
    assert state["version"] == 1
    assert state["owner_id"] == "owner-1"
    assert state["created_at"] == state["updated_at"] == wire["occurred_at"]
    assert state["budget"] == wire["payload"]["budget"]


def test_an_update_changes_only_the_fields_it_carries() -> None:
    campaign = new_campaign("owner-1", name="Before", description="kept")
    update = campaign.then("CampaignUpdated", {"name": "After"})
    assert set(campaign_field_changes(update)) == {"name", "updated_at"}
    state = fold_campaign(campaign.events) or {}
    assert (state["name"], state["description"], state["version"]) == ("After", "kept", 2)


def test_lifecycle_events_set_the_status() -> None:
    campaign = new_campaign("owner-1")
    statuses = []
    for event_type in ("CampaignActivated", "CampaignPaused", "CampaignActivated", "CampaignCompleted"):
        campaign.then(event_type)
        statuses.append((fold_campaign(campaign.events) or {})["status"])
    assert statuses == ["active", "paused", "active", "completed"]
    campaign.then("CampaignDeleted")
    assert (fold_campaign(campaign.events) or {})["status"] == "deleted"
    assert (
        next_campaign_state(fold_campaign(campaign.events[:-1]), campaign.events[-1])["status"] == "deleted"
    )


def test_scheduling_shows_the_status_and_the_next_transition_with_its_time() -> None:
    campaign = new_campaign("owner-1")
    state = fold_campaign(campaign.events) or {}
    assert state["next_transition"] is None
    created = campaign.events[0].payload
    dates = {"starts_at": created["starts_at"], "ends_at": created["ends_at"]}
    campaign.then("CampaignScheduled", dates)
    state = fold_campaign(campaign.events) or {}
    assert state["status"] == "scheduled"
    assert state["next_transition"] == {"to": "active", "at": created["starts_at"]}
    campaign.then("CampaignUpdated", {"starts_at": "2031-01-01T00:00:00Z"})
    assert (fold_campaign(campaign.events) or {})["next_transition"]["at"] == "2031-01-01T00:00:00Z"
    timer = {"timer_id": "timer:x:v3:activate", "due_at": "2031-01-01T00:00:00Z", "lateness_ms": 12}
    campaign.then("CampaignActivated", {"timer": timer}, actor="scheduler")
    state = fold_campaign(campaign.events) or {}
    assert state["status"] == "active"
    assert state["next_transition"] == {"to": "completed", "at": created["ends_at"]}
    # The live projection's step and the fold agree.
    assert next_campaign_state(fold_campaign(campaign.events[:-1]), campaign.events[-1]) == state
    campaign.then("CampaignCompleted")
    assert (fold_campaign(campaign.events) or {})["next_transition"] is None


def test_unscheduling_returns_to_draft_without_a_next_transition() -> None:
    campaign = new_campaign("owner-1")
    created = campaign.events[0].payload
    campaign.then("CampaignScheduled", {"starts_at": created["starts_at"], "ends_at": created["ends_at"]})
    campaign.then("CampaignUnscheduled")
    state = fold_campaign(campaign.events) or {}
    assert (state["status"], state["next_transition"]) == ("draft", None)


def test_a_document_is_compact_json_in_field_order() -> None:
    campaign = new_campaign("owner-1")
    document = campaign_document(fold_campaign(campaign.events) or {})
    assert document == orjson.dumps(orjson.loads(document))
    assert list(orjson.loads(document)) == list(CAMPAIGN_FIELDS)


def test_times_are_written_as_the_envelope_writes_them() -> None:
    moment = datetime(2027, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    campaign = new_campaign("owner-1", clock=moment)
    wire = orjson.loads(encode_event(campaign.events[0]))
    assert json_time(campaign.events[0].occurred_at) == wire["occurred_at"]
    assert epoch_millis(datetime(1970, 1, 1, 0, 0, 1, 999999, tzinfo=UTC)) == 1999


def test_one_instant_in_two_zones_keeps_each_its_own_form() -> None:
    # Equal datetimes (one instant) hash alike: the remembered forms must not mix them up.
    in_utc = datetime(2027, 1, 2, 10, 0, tzinfo=UTC)
    two_hours_east = datetime(2027, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert in_utc == two_hours_east
    assert json_time(in_utc) == "2027-01-02T10:00:00Z"
    assert json_time(two_hours_east) == "2027-01-02T12:00:00+02:00"
    assert json_time(in_utc) == "2027-01-02T10:00:00Z"


def test_index_members_sort_like_their_values() -> None:
    early, late = datetime(2001, 9, 9, tzinfo=UTC), datetime(2001, 9, 9, tzinfo=UTC) + timedelta(days=3650)
    # 2001-09-09 is where epoch milliseconds gain a digit: fixed width keeps the order.
    members = [sort_member(time_sort_value(epoch_millis(t)), "x") for t in (late, early)]
    assert sorted(members) == members[::-1]
    names = [sort_member(name_sort_value(n), i) for n, i in (("abc", "2"), ("ABCD", "1"), ("Abc", "1"))]
    assert sorted(names) == [names[2], names[0], names[1]]


ID_A = "00000000-0000-4000-8000-000000000001"
ID_B = "ffffffff-ffff-4fff-bfff-ffffffffffff"


def test_packed_members_sort_like_their_values_and_give_back_their_id() -> None:
    early, late = datetime(2001, 9, 9, tzinfo=UTC), datetime(2001, 9, 9, tzinfo=UTC) + timedelta(days=3650)
    times = [packed_time_member(epoch_millis(t), i) for t, i in ((late, ID_A), (early, ID_B), (early, "x"))]
    assert sorted(times)[-1] == times[0]
    names = [
        packed_name_member(n, i) for n, i in (("abc", ID_B), ("ABCD", ID_A), ("Abc", ID_A), ("ab", "c-1"))
    ]
    assert sorted(names) == [names[3], names[2], names[0], names[1]]
    for member, campaign_id in zip([*times, *names], [ID_A, ID_B, "x", ID_B, ID_A, ID_A, "c-1"], strict=True):
        assert member_campaign_id(member, packed=True) == campaign_id
    # A UUID takes 16 bytes where its text took 36; any other id keeps its text (after 0xff).
    assert len(packed_id(ID_A)) == 16 and set_member(ID_A, packed=True) == packed_id(ID_A)
    assert packed_id("ID-A") == b"\xffID-A" and set_member("ID-A", packed=False) == b"ID-A"
    assert packed_id(ID_B.upper()) == b"\xff" + ID_B.upper().encode()  # not canonical: its text
    assert len(times[0]) == 23 < len(sort_member(time_sort_value(0), ID_A)) == 50
    long_id = "é" * 100  # 200 bytes: the length takes two bytes
    assert member_campaign_id(packed_name_member("n", long_id), packed=True) == long_id


def test_text_and_packed_members_convert_both_ways() -> None:
    millis = epoch_millis(datetime(2027, 1, 1, tzinfo=UTC))
    for campaign_id in (ID_A, "c-1"):
        text = sort_member(time_sort_value(millis), campaign_id)
        packed = packed_time_member(millis, campaign_id)
        assert packed_from_text("created", text) == packed
        assert text_from_packed("updated", packed) == text
        name_text = sort_member(name_sort_value("Spring \x00 Launch"), campaign_id)
        name_packed = packed_name_member("Spring \x00 Launch", campaign_id)
        assert packed_from_text("name", name_text) == name_packed
        assert text_from_packed("name", name_packed) == name_text


def test_memberships_come_from_the_document_and_move_only_with_what_changed() -> None:
    campaign = new_campaign("owner-1", clock=datetime(2027, 1, 1, tzinfo=UTC), channel="sms", tags=["x", "y"])
    created = campaign_memberships(fold_campaign(campaign.events) or {})
    member, where = created["created"]
    assert where == [None, ("owner", "owner-1")]
    assert filter_memberships(fold_campaign(campaign.events) or {}) == [
        ("status", "draft"),
        ("channel", "sms"),
        ("tag", "x"),
        ("tag", "y"),
    ]
    millis = epoch_millis(campaign.events[0].occurred_at)
    assert member == packed_time_member(millis, campaign.aggregate_id)
    assert created["name"][0] == packed_name_member("Spring launch", campaign.aggregate_id)
    text = campaign_memberships(fold_campaign(campaign.events) or {}, packed=False)
    assert text["created"][0] == sort_member(time_sort_value(millis), campaign.aggregate_id)

    campaign.then("CampaignPaused")
    paused = campaign_memberships(fold_campaign(campaign.events) or {})
    assert paused["created"][0] == created["created"][0]
    assert paused["name"][0] == created["name"][0]
    assert paused["updated"][0] != created["updated"][0]
    assert paused["created"][1] == created["created"][1]
    # Only the status set moves with a status; only the updated sort with any event.
    before, after = fold_campaign(campaign.events[:-1]), fold_campaign(campaign.events)
    assert filter_moves(before, after) == ([("status", "draft")], [("status", "paused")])
    assert [move.sort for move in membership_moves(before, after)] == ["updated"]
    assert filter_moves(before, None) == (filter_memberships(before or {}), [])


def test_membership_moves_equal_the_difference_of_the_memberships() -> None:
    campaign = new_campaign("owner-1", clock=datetime(2027, 1, 1, tzinfo=UTC), tags=["x"])
    campaign.then("CampaignUpdated", {"name": "Autumn", "tags": ["y"]})
    campaign.then("CampaignUpdated", {"name": "AUTUMN"})  # the same name sort value
    campaign.then("CampaignActivated")
    states: list[dict[str, Any] | None] = [None]
    states += [fold_campaign(campaign.events[:n]) for n in range(1, len(campaign.events) + 1)]
    moved_owner = dict(states[-1] or {}, owner_id="owner-2")
    states += [moved_owner, None]
    for (old, new), packed in itertools.product(pairwise(states), (True, False)):
        before = campaign_memberships(old, packed) if old else {}
        after = campaign_memberships(new, packed) if new else {}
        expected = {}
        for sort in set(before) | set(after):
            old_member, old_in = before.get(sort, (b"", []))
            new_member, new_in = after.get(sort, (b"", []))
            kept = set(old_in) & set(new_in) if old_member == new_member else set()
            leaves = [w for w in old_in if w not in kept]
            joins = [w for w in new_in if w not in kept]
            if leaves or joins:
                expected[sort] = (old_member, leaves, new_member, joins)
        moves = membership_moves(old, new, packed)
        assert {m.sort: (m.old_member, m.leaves, m.new_member, m.joins) for m in moves} == expected
