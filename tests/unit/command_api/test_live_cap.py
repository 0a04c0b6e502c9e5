"""The live-campaign cap counts an owner's campaigns only when its tally is stale or at the cap."""

from __future__ import annotations

import pytest

from command_api.application.errors import TooManyLiveCampaigns
from command_api.application.live_cap import LiveCampaignCap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counter:
    """The database's exact count of one owner's live campaigns, and how often it was asked."""

    def __init__(self, live: int) -> None:
        self.live = live
        self.calls = 0

    async def __call__(self, limit: int) -> int:
        self.calls += 1
        return min(self.live, limit)


async def create(cap: LiveCampaignCap, counter: Counter, owner: str = "owner") -> None:
    await cap.admit(owner, counter)
    counter.live += 1
    cap.created(owner)


async def test_an_owner_far_from_the_cap_is_counted_once_per_recount_interval() -> None:
    clock, counter = Clock(), Counter(live=10)
    cap = LiveCampaignCap(100, recount_seconds=2.0, tracked_owners=10, clock=clock)
    for _ in range(5):
        await create(cap, counter)
    assert counter.calls == 1
    clock.now = 2.0
    await create(cap, counter)
    assert counter.calls == 2


async def test_creates_since_the_count_reach_the_cap_without_counting_again_until_then() -> None:
    clock, counter = Clock(), Counter(live=0)
    cap = LiveCampaignCap(3, recount_seconds=60.0, tracked_owners=10, clock=clock)
    for _ in range(3):
        await create(cap, counter)
    assert counter.calls == 1
    with pytest.raises(TooManyLiveCampaigns):
        await cap.admit("owner", counter)
    assert counter.calls == 2  # the refusal rests on a fresh count


async def test_at_the_cap_a_delete_elsewhere_is_seen_by_the_next_create() -> None:
    clock, counter = Clock(), Counter(live=3)
    cap = LiveCampaignCap(3, recount_seconds=60.0, tracked_owners=10, clock=clock)
    with pytest.raises(TooManyLiveCampaigns):
        await cap.admit("owner", counter)
    counter.live = 2
    await cap.admit("owner", counter)
    assert counter.calls == 2


async def test_creates_on_other_processes_are_seen_at_the_next_recount() -> None:
    clock, counter = Clock(), Counter(live=0)
    cap = LiveCampaignCap(5, recount_seconds=2.0, tracked_owners=10, clock=clock)
    await create(cap, counter)
    counter.live = 5  # four more made through another worker
    await cap.admit("owner", counter)  # unseen yet: the tally says 1
    clock.now = 2.5
    with pytest.raises(TooManyLiveCampaigns):
        await cap.admit("owner", counter)


async def test_only_the_most_recent_owners_are_tracked() -> None:
    clock = Clock()
    cap = LiveCampaignCap(100, recount_seconds=60.0, tracked_owners=2, clock=clock)
    counters = {name: Counter(live=1) for name in ("a", "b", "c")}
    for name in ("a", "b", "c", "a"):
        await cap.admit(name, counters[name])
    assert counters["a"].calls == 2  # "a" was the oldest when "c" came, and was dropped
    assert counters["b"].calls == 1
