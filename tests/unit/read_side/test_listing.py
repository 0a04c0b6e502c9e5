"""List pages: cursors bound to their sort order, and who sees which campaigns."""

from __future__ import annotations

import pytest

from query_api.domain.access import may_read
from query_api.domain.listing import CampaignFilters, InvalidCursor, SortOrder, decode_cursor, encode_cursor
from readmodels.campaigns import packed_time_member, sort_member, time_sort_value
from service_runtime.tokens import Principal

ALICE = Principal("alice", ("user",), "t1")
ADMIN = Principal("root", ("user", "admin"), "t2")


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    member = b"0001795835925591\x00c-1/+"
    cursor = encode_cursor(SortOrder.CREATED_DESC, member)
    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert decode_cursor(cursor, SortOrder.CREATED_DESC) == member


@pytest.mark.parametrize("cursor", ["garbage!", "", "YWJj", encode_cursor(SortOrder.NAME, b"x")[:-3]])
def test_a_cursor_the_api_did_not_issue_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, SortOrder.NAME)


def test_a_cursor_goes_on_across_a_layout_upgrade_in_the_members_form_of_the_generation() -> None:
    campaign_id = "00000000-0000-4000-8000-000000000001"
    text = sort_member(time_sort_value(1798761600000), campaign_id)
    packed = packed_time_member(1798761600000, campaign_id)
    issued_before = encode_cursor(SortOrder.CREATED_DESC, text, packed=False)
    assert decode_cursor(issued_before, SortOrder.CREATED_DESC, packed=True) == packed
    issued_after = encode_cursor(SortOrder.CREATED_DESC, packed)
    assert decode_cursor(issued_after, SortOrder.CREATED_DESC) == packed
    assert decode_cursor(issued_after, SortOrder.CREATED_DESC, packed=False) == text
    with pytest.raises(InvalidCursor):  # a text cursor whose member is no index member
        decode_cursor(encode_cursor(SortOrder.CREATED, b"no-separator", packed=False), SortOrder.CREATED)


def test_a_cursor_is_refused_under_another_sort_order() -> None:
    cursor = encode_cursor(SortOrder.NAME, b"abc\x00id")
    with pytest.raises(InvalidCursor, match="sort=name"):
        decode_cursor(cursor, SortOrder.NAME_DESC)


def test_sort_orders_name_their_index_and_direction() -> None:
    assert (SortOrder.UPDATED_DESC.index_key, SortOrder.UPDATED_DESC.descending) == ("updated", True)
    assert (SortOrder.NAME.index_key, SortOrder.NAME.descending) == ("name", False)


def test_users_are_confined_to_their_own_campaigns_and_admins_are_not() -> None:
    asked = CampaignFilters(status="active", tag="x")
    assert asked.visible_to(ALICE) == CampaignFilters(status="active", tag="x", owner_id="alice")
    assert CampaignFilters(owner_id="bob").visible_to(ALICE) is None
    assert CampaignFilters(owner_id="bob").visible_to(ADMIN) == CampaignFilters(owner_id="bob")
    assert asked.visible_to(ALICE).index_pairs() == [("status", "active"), ("tag", "x"), ("owner", "alice")]  # type: ignore[union-attr]
    assert may_read(ALICE, "alice") and not may_read(ALICE, "bob") and not may_read(ALICE, None)
    assert may_read(ADMIN, "bob")
