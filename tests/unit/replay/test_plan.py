"""Which projections a replay touches, how generations are named, when catching up stops."""

from __future__ import annotations

import pytest

from projectors.replay.domain.plan import (
    CatchUpPolicy,
    UnknownProjection,
    cut_into_shares,
    next_generation,
    scratch_generation,
    select_projections,
)
from projectors.replay.domain.seen_versions import SeenVersions

KNOWN = ("campaigns", "users", "stats")


def test_all_selects_every_projection_and_a_name_selects_that_one() -> None:
    assert select_projections("all", KNOWN) == ["campaigns", "users", "stats"]
    assert select_projections("users", KNOWN) == ["users"]


def test_an_unknown_projection_is_refused_with_the_choices() -> None:
    with pytest.raises(UnknownProjection, match="campaigns, users, stats, all"):
        select_projections("campaign", KNOWN)


def test_the_next_generation_numbers_up_from_the_live_one() -> None:
    assert next_generation("campaigns", "campaigns.1") == "campaigns.2"
    assert next_generation("campaigns", "campaigns.41") == "campaigns.42"


def test_a_live_generation_without_a_number_is_followed_by_generation_1() -> None:
    assert next_generation("stats", "stats.verify-ab12") == "stats.1"
    assert next_generation("stats", "users.7") == "stats.1"


def test_scratch_generations_never_collide_with_numbered_ones() -> None:
    scratch = scratch_generation("users", "00ff")
    assert scratch == "users.verify-00ff"
    assert next_generation("users", scratch) != scratch


def test_catching_up_stops_at_a_quiet_pass_or_after_the_last_allowed_one() -> None:
    policy = CatchUpPolicy(quiet_events=10, max_passes=3)
    assert policy.another_pass(0, 5000)
    assert not policy.another_pass(1, 10)
    assert policy.another_pass(2, 11)
    assert not policy.another_pass(3, 5000)


def test_seen_versions_tell_what_is_newer_than_what_was_read() -> None:
    seen = SeenVersions()
    seen.record("a", 3)
    seen.record("a", 2)  # an older one never lowers the mark
    assert not seen.is_new("a", 3)
    assert seen.is_new("a", 4)
    assert seen.is_new("b", 1)
    assert seen.last("a") == 3
    assert len(seen) == 1


def test_shares_deal_whole_ranges_largest_first_to_the_emptiest_share() -> None:
    ranges = {"p0": (0, 50), "p1": (10, 40), "p2": (0, 20), "p3": (5, 15), "p4": (7, 7)}

    shares = cut_into_shares(ranges, 2)

    # 50 to the first, 30 to the second, 20 to the second (30 < 50), 10 to the first (50 = 50).
    assert shares == [{"p0": (0, 50), "p3": (5, 15)}, {"p1": (10, 40), "p2": (0, 20)}]
    assert "p4" not in {key for share in shares for key in share}  # nothing left to read there


def test_shares_are_never_empty_and_never_more_than_the_ranges_or_the_ways() -> None:
    assert cut_into_shares({"p0": (0, 5)}, 4) == [{"p0": (0, 5)}]
    assert cut_into_shares({"p0": (3, 3)}, 2) == []
    assert len(cut_into_shares({f"p{n}": (0, 1 + n) for n in range(6)}, 3)) == 3
    assert cut_into_shares({"p0": (0, 9), "p1": (0, 1)}, 1) == [{"p0": (0, 9), "p1": (0, 1)}]


def test_the_largest_share_comes_first() -> None:
    shares = cut_into_shares({"p0": (0, 10), "p1": (0, 30), "p2": (0, 25)}, 3)

    assert [sum(end - first for first, end in share.values()) for share in shares] == [30, 25, 10]
