"""The query API's campaign cache: kept only while nothing can have changed it unannounced."""

from __future__ import annotations

import asyncio

from query_api.adapters.campaign_cache import ENTRY_OVERHEAD_BYTES, CampaignCache
from query_api.adapters.notifications import NotificationListener, VersionWaiters
from readmodels.snapshot import Snapshot
from tests.support.clock import Clock

BASE = "rm:campaigns.1"


def snapshot(version: int = 1, doc: bytes = b'{"id":"c1"}') -> Snapshot:
    return Snapshot(doc, "alice", version)


def live_cache(clock: Clock | None = None, max_bytes: int = 1 << 20) -> CampaignCache:
    cache = CampaignCache(max_bytes, ttl_seconds=1.0, settle_seconds=5.0, clock=clock or Clock())
    cache.feed_up()
    cache.get(BASE, "warm-up")  # the first read names the live generation
    return cache


def fill(cache: CampaignCache, campaign_id: str, value: Snapshot, base: str = BASE) -> None:
    ticket = cache.ticket()
    cache.put(base, campaign_id, value, ticket)


def test_a_read_is_answered_from_memory_until_its_campaign_changes() -> None:
    cache = live_cache()
    fill(cache, "c1", snapshot(1))
    assert cache.get(BASE, "c1") == snapshot(1)
    cache.invalidate("c1")
    assert cache.get(BASE, "c1") is None


def test_a_read_that_an_announcement_overtook_is_not_kept() -> None:
    cache = live_cache()
    ticket = cache.ticket()  # the read is sent to Redis...
    cache.invalidate("c1")  # ...the announcement of version 2 arrives first...
    cache.put(BASE, "c1", snapshot(1), ticket)  # ...then the reply, computed before version 2
    assert cache.get(BASE, "c1") is None


def test_nothing_is_kept_while_the_events_feed_is_down() -> None:
    cache = live_cache()
    fill(cache, "c1", snapshot(1))
    cache.feed_down()
    assert cache.get(BASE, "c1") is None
    fill(cache, "c1", snapshot(1))
    assert cache.get(BASE, "c1") is None
    cache.feed_up()
    fill(cache, "c1", snapshot(2))
    assert cache.get(BASE, "c1") == snapshot(2)


def test_a_read_begun_before_the_feed_came_back_is_not_kept() -> None:
    cache = CampaignCache(1 << 20, ttl_seconds=1.0)
    cache.get(BASE, "c1")
    ticket = cache.ticket()
    cache.feed_up()
    cache.put(BASE, "c1", snapshot(1), ticket)
    assert cache.get(BASE, "c1") is None


def test_a_generation_swap_empties_it_and_keeps_nothing_while_the_replay_settles() -> None:
    clock = Clock()
    cache = live_cache(clock)
    fill(cache, "c1", snapshot(1))
    new_base = "rm:campaigns.2"
    assert cache.get(new_base, "c1") is None
    fill(cache, "c1", snapshot(1), new_base)
    assert cache.get(new_base, "c1") is None  # the final pass may still write it unannounced
    clock.now += 5.0
    fill(cache, "c1", snapshot(1), new_base)
    assert cache.get(new_base, "c1") == snapshot(1)
    assert cache.get(BASE, "c1") is None  # the old generation's entries are gone


def test_the_settling_counts_from_when_the_swap_was_seen_not_from_the_next_read() -> None:
    # A worker that served nothing across a swap (the scale bench's query API between two
    # sizes: the replay swapped, then a minute of projecting without reads) kept no page or
    # campaign for the first 5 s of its next reads, when the settling was started by them.
    clock = Clock()
    cache = live_page_cache(clock)
    fill(cache, "c1", snapshot(1))
    fill_page(cache)
    new_base = "rm:campaigns.2"
    cache.generation_seen(new_base)  # the generation cache learnt the new pointer
    assert cache.get(new_base, "c1") is None and cache.pages == 0  # emptied at once
    fill(cache, "c1", snapshot(1), new_base)
    fill_page(cache, base=new_base)
    assert cache.get(new_base, "c1") is None and cache.pages == 0  # settling from the swap
    clock.now += 60.0  # idle; then the next reads
    fill(cache, "c1", snapshot(1), new_base)
    fill_page(cache, base=new_base)
    assert cache.get(new_base, "c1") == snapshot(1)
    assert cache.get_page(new_base, QUESTION) == PAGE
    cache.generation_seen(new_base)  # a refresh that finds the same pointer changes nothing
    assert cache.get_page(new_base, QUESTION) == PAGE


def test_the_first_generation_seen_needs_no_settling() -> None:
    cache = CampaignCache(1 << 20, ttl_seconds=1.0, settle_seconds=5.0, clock=Clock())
    cache.feed_up()
    cache.generation_seen(BASE)  # the process's first refresh: no replay behind it
    fill(cache, "c1", snapshot(1))
    assert cache.get(BASE, "c1") == snapshot(1)


def test_a_read_of_the_old_generation_is_not_kept_after_the_swap() -> None:
    clock = Clock()
    cache = live_cache(clock)
    ticket = cache.ticket()
    cache.get("rm:campaigns.2", "other")  # another request sees the new pointer meanwhile
    clock.now += 10
    cache.put(BASE, "c1", snapshot(1), ticket)
    assert cache.get(BASE, "c1") is None


def test_an_entry_lives_at_most_its_ttl_even_if_an_announcement_is_lost() -> None:
    clock = Clock()
    cache = live_cache(clock)
    fill(cache, "c1", snapshot(1))
    clock.now += 0.99
    assert cache.get(BASE, "c1") == snapshot(1)
    clock.now += 0.02
    assert cache.get(BASE, "c1") is None
    assert len(cache) == 0


def test_unknown_campaigns_are_not_kept() -> None:
    cache = live_cache()
    fill(cache, "nope", Snapshot(None, None, 0))
    assert len(cache) == 0


def test_memory_is_bounded_and_the_oldest_entries_go_first() -> None:
    doc = b"x" * 700
    per_entry = len(doc) + 2 + ENTRY_OVERHEAD_BYTES
    cache = live_cache(max_bytes=per_entry * 3)
    for n in range(5):
        fill(cache, f"c{n}", snapshot(1, doc))
    assert len(cache) == 3 and cache.size_bytes <= per_entry * 3
    assert [cache.get(BASE, f"c{n}") is not None for n in range(5)] == [False, False, True, True, True]
    fill(cache, "c3", snapshot(2, doc))  # replacing an entry does not count it twice
    assert cache.size_bytes == per_entry * 3


def test_a_zero_budget_turns_it_off() -> None:
    cache = live_cache(max_bytes=0)
    fill(cache, "c1", snapshot(1))
    assert len(cache) == 0


async def _no_swap() -> None:
    return None


async def test_an_announcement_drops_the_entry_before_it_wakes_the_waiters() -> None:
    cache = live_cache()
    fill(cache, "c1", snapshot(1))
    waiters = VersionWaiters()
    listener = NotificationListener(None, "rm", waiters, _no_swap, cache)  # type: ignore[arg-type]
    seen: list[Snapshot | None] = []
    with waiters.watch("c1", 2) as woken:
        woken.add_done_callback(lambda _: seen.append(cache.get(BASE, "c1")))
        message = b'{"aggregate_id":"c1","aggregate_version":2,"projected_at":"x"}'
        listener._dispatch({"type": "smessage", "channel": b"rm:events", "data": message})
        await asyncio.sleep(0)
    assert seen == [None]


def test_an_unreadable_announcement_empties_the_cache() -> None:
    cache = live_cache()
    fill(cache, "c1", snapshot(1))
    listener = NotificationListener(None, "rm", VersionWaiters(), _no_swap, cache)  # type: ignore[arg-type]
    listener._dispatch({"type": "smessage", "channel": b"rm:events", "data": b"not json"})
    assert len(cache) == 0


# Pages of GET /campaigns: the same rules, but any announcement drops them all.

PAGE = b'{"items":[{"id":"c1"},{"id":"c2"}],"next_cursor":null}'
QUESTION = (b"status=active&limit=20", "alice")


def live_page_cache(clock: Clock | None = None, page_max_bytes: int = 1 << 20) -> CampaignCache:
    cache = CampaignCache(
        1 << 20, ttl_seconds=1.0, settle_seconds=5.0, clock=clock or Clock(), page_max_bytes=page_max_bytes
    )
    cache.feed_up()
    cache.get_page(BASE, (b"warm-up", None))
    return cache


def fill_page(cache: CampaignCache, question: object = QUESTION, base: str = BASE) -> None:
    cache.put_page(base, question, PAGE, cache.ticket(), 10)  # type: ignore[arg-type]


def test_a_page_is_answered_from_memory_until_any_announcement() -> None:
    cache = live_page_cache()
    fill_page(cache)
    fill_page(cache, (b"sort=name&limit=5", None))
    assert cache.get_page(BASE, QUESTION) == PAGE
    cache.invalidate("some-other-campaign")  # a page may change with any campaign (one created)
    assert cache.get_page(BASE, QUESTION) is None
    assert cache.pages == 0 and cache.page_bytes == 0


def test_a_campaign_announcement_drops_only_the_pages_that_may_hold_its_owners_campaigns() -> None:
    cache = live_page_cache()
    alice, bob, admin = QUESTION, (b"status=active&limit=20", "bob"), (b"status=active&limit=20", None)
    for question in (alice, bob, admin):
        fill_page(cache, question)
    cache.invalidate("c7", "alice")  # one of alice's campaigns moved: her pages and the admins'
    assert cache.get_page(BASE, alice) is None and cache.get_page(BASE, admin) is None
    assert cache.get_page(BASE, bob) == PAGE
    assert cache.pages == 1 and cache.page_bytes > 0
    cache.invalidate("u1", lists=False)  # a user: no page shows one
    assert cache.get_page(BASE, bob) == PAGE
    fill_page(cache, alice)
    cache.invalidate("c8")  # a campaign whose owner the announcement does not name: every page
    assert cache.pages == 0 and cache.page_bytes == 0


def test_a_page_read_that_an_announcement_overtook_is_not_kept() -> None:
    cache = live_page_cache()
    ticket = cache.ticket()
    cache.invalidate("c9")
    cache.put_page(BASE, QUESTION, PAGE, ticket, 10)
    assert cache.get_page(BASE, QUESTION) is None


def test_pages_follow_the_feed_the_generation_and_the_ttl() -> None:
    clock = Clock()
    cache = live_page_cache(clock)
    fill_page(cache)
    cache.feed_down()
    assert cache.get_page(BASE, QUESTION) is None
    fill_page(cache)
    assert cache.pages == 0  # nothing kept while announcements may be missed
    cache.feed_up()
    fill_page(cache)
    clock.now += 1.01
    assert cache.get_page(BASE, QUESTION) is None  # its ttl
    fill_page(cache)
    assert cache.get_page("rm:campaigns.2", QUESTION) is None  # a swap empties it...
    fill_page(cache, base="rm:campaigns.2")
    assert cache.pages == 0  # ...and keeps nothing while the replay settles
    clock.now += 5.0
    fill_page(cache, base="rm:campaigns.2")
    assert cache.get_page("rm:campaigns.2", QUESTION) == PAGE


def test_page_memory_is_bounded_and_zero_turns_pages_off() -> None:
    per_page = len(PAGE) + 10 + ENTRY_OVERHEAD_BYTES
    cache = live_page_cache(page_max_bytes=per_page * 2)
    for n in range(4):
        fill_page(cache, ("alice", n))
    assert cache.pages == 2 and cache.page_bytes == per_page * 2
    assert [cache.get_page(BASE, ("alice", n)) is not None for n in range(4)] == [False, False, True, True]
    off = live_page_cache(page_max_bytes=0)
    fill_page(off)
    assert off.pages == 0
    assert len(off) == 0  # the documents' entries are apart from the pages
