"""The live-campaign cap counts an owner's campaigns only when the command rate could have brought
them to the cap since the last count, or when the tally is at the cap."""

from __future__ import annotations

import asyncio

import pytest

from command_api.application.errors import TooManyLiveCampaigns
from command_api.application.live_cap import LiveCampaignCap
from tests.support.clock import Clock


class Counter:
    """The database's exact count of one owner's live campaigns, and how often it was asked."""

    def __init__(self, live: int) -> None:
        self.live = live
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, limit: int) -> int:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return min(self.live, limit)


def cap_of(
    limit: int, clock: Clock, *, rate: float = 1.0, burst: int = 5, owners: int = 10
) -> LiveCampaignCap:
    return LiveCampaignCap(
        limit, recount_seconds=2.0, tracked_owners=owners, rate_per_second=rate, burst=burst, clock=clock
    )


async def create(cap: LiveCampaignCap, counter: Counter, owner: str = "owner") -> None:
    await cap.admit(owner, counter)
    counter.live += 1
    cap.created(owner)


async def test_an_owner_the_command_rate_keeps_far_from_the_cap_is_counted_once() -> None:
    clock, counter = Clock(0.0), Counter(live=10)
    cap = cap_of(200, clock, rate=1.0, burst=5)
    for second in range(60):  # at most 10 + 60 seen and 5 + 60 unseen: under 200 for a minute
        clock.now = float(second)
        await create(cap, counter)
    assert counter.calls == 1


async def test_once_the_rate_could_reach_the_cap_it_counts_every_recount_interval() -> None:
    clock, counter = Clock(0.0), Counter(live=80)
    cap = cap_of(100, clock, rate=1.0, burst=5)
    await create(cap, counter)  # 81 seen, 5 unseen at most: safe
    clock.now = 1.0
    await create(cap, counter)  # 82 + 6: still safe
    assert counter.calls == 1
    clock.now = 20.0  # 83 + 25 could reach 100: counted again, the count being 20 s old
    await create(cap, counter)
    assert counter.calls == 2
    clock.now = 21.0  # near the cap now, but counted only 1 s ago
    await create(cap, counter)
    assert counter.calls == 2


async def test_creates_since_the_count_reach_the_cap_and_the_refusal_rests_on_a_fresh_count() -> None:
    clock, counter = Clock(0.0), Counter(live=0)
    cap = cap_of(3, clock, rate=0.0, burst=0)
    for _ in range(3):
        await create(cap, counter)
    assert counter.calls == 1
    with pytest.raises(TooManyLiveCampaigns):
        await cap.admit("owner", counter)
    assert counter.calls == 2


async def test_at_the_cap_a_delete_elsewhere_is_seen_by_the_next_create() -> None:
    clock, counter = Clock(0.0), Counter(live=3)
    cap = cap_of(3, clock)
    with pytest.raises(TooManyLiveCampaigns):
        await cap.admit("owner", counter)
    counter.live = 2
    await cap.admit("owner", counter)
    assert counter.calls == 2


async def test_creates_on_other_processes_are_seen_at_the_next_recount() -> None:
    clock, counter = Clock(0.0), Counter(live=0)
    cap = cap_of(5, clock, rate=1.0, burst=5)
    await create(cap, counter)
    counter.live = 5  # four more made through another worker
    await cap.admit("owner", counter)  # unseen yet, and counted less than 2 s ago
    clock.now = 2.5
    with pytest.raises(TooManyLiveCampaigns):
        await cap.admit("owner", counter)


async def test_concurrent_creates_share_one_count() -> None:
    clock, counter = Clock(0.0), Counter(live=0)
    counter.gate = asyncio.Event()
    cap = cap_of(100, clock)
    admissions = [asyncio.create_task(cap.admit("owner", counter)) for _ in range(10)]
    await asyncio.sleep(0)
    counter.gate.set()
    await asyncio.gather(*admissions)
    assert counter.calls == 1


async def test_a_count_whose_request_went_away_is_taken_up_by_a_waiter() -> None:
    clock, counter = Clock(0.0), Counter(live=0)
    counter.gate = asyncio.Event()
    cap = cap_of(100, clock)
    first = asyncio.create_task(cap.admit("owner", counter))
    await asyncio.sleep(0)
    second = asyncio.create_task(cap.admit("owner", counter))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    counter.gate.set()
    await second
    assert counter.calls == 2
    assert first.cancelled()


async def test_only_the_most_recent_owners_are_tracked() -> None:
    clock = Clock(0.0)
    cap = cap_of(100, clock, owners=2)
    counters = {name: Counter(live=1) for name in ("a", "b", "c")}
    for name in ("a", "b", "c", "a"):
        await cap.admit(name, counters[name])
    assert counters["a"].calls == 2  # "a" was the oldest when "c" came, and was dropped
    assert counters["b"].calls == 1
