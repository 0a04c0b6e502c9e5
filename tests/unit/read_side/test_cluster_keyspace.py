"""The bucketed keyspace: one slot per aggregate's keys, buckets spread over the slots, and the
k-way merge of the buckets' pages."""

from __future__ import annotations

import random

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from query_api.domain.listing import merge_bucket_pages
from readmodels.keyspace import (
    CampaignKeys,
    StatsKeys,
    UserKeys,
    announcement_channel,
    announcement_channel_of,
    announcement_channels,
    bucket_of,
    bucket_segments,
    generation_base,
    parked_key,
    parked_set_key_of,
)


def test_one_bucket_means_untagged_keys() -> None:
    keys = CampaignKeys(generation_base("rm", "campaigns.1"))
    assert bucket_segments(1) == ("",)
    assert keys.campaign("c1") == "rm:campaigns.1:campaign:c1"
    assert keys.index("created", "owner", "u1") == "rm:campaigns.1:cidx:created:owner:u1"
    assert keys.filter_set("status", "draft") == "rm:campaigns.1:cset:status:draft"


@pytest.mark.parametrize("buckets", [3, 16, 64, 256])
def test_each_bucket_tag_hashes_into_its_own_share_of_the_slots(buckets: int) -> None:
    for bucket, segment in enumerate(bucket_segments(buckets)):
        assert segment.startswith("{") and segment.endswith("}:")
        slot = key_slot(segment.encode())
        assert bucket * REDIS_CLUSTER_HASH_SLOTS // buckets <= slot
        assert slot < (bucket + 1) * REDIS_CLUSTER_HASH_SLOTS // buckets


def test_every_key_of_an_aggregate_and_its_bucket_shares_one_slot_whatever_the_generation() -> None:
    buckets = 64
    for aggregate_id in ("c-1", "5f0c6e0e9c2b4c1d8e7f", "user-42"):
        slots = set()
        for generation in ("campaigns.1", "campaigns.7", "stats.2", "users.1"):
            base = generation_base("rm", generation)
            campaigns = CampaignKeys(base, buckets)
            bucket = campaigns.bucket_of(aggregate_id)
            names = [
                campaigns.campaign(aggregate_id),
                campaigns.parked(aggregate_id),
                campaigns.parked_set(bucket),
                campaigns.index("name", bucket=bucket),
                campaigns.index("created", "owner", "x", bucket),
                campaigns.filter_set("tag", "x", bucket),
                parked_key(base, "user", aggregate_id, buckets),
                parked_set_key_of(base, aggregate_id, buckets),
                UserKeys(base, buckets).user(aggregate_id),
                StatsKeys(base, buckets).campaign(aggregate_id)[0],
                StatsKeys(base, buckets).user(aggregate_id)[0],
                StatsKeys(base, buckets).layout1_campaign(aggregate_id),
                *StatsKeys(base, buckets).counters(aggregate_id),
                announcement_channel_of("rm", aggregate_id, buckets),
            ]
            slots |= {key_slot(name.encode()) for name in names}
        assert len(slots) == 1, aggregate_id


def test_one_bucket_announces_on_the_untagged_events_channel() -> None:
    assert announcement_channels("rm") == ["rm:events"]
    assert announcement_channel_of("rm", "c-1") == "rm:events"


def test_each_bucket_announces_on_its_own_channel_in_its_own_slot() -> None:
    channels = announcement_channels("rm", 32)
    assert len(set(channels)) == 32
    for bucket, channel in enumerate(channels):
        assert channel == announcement_channel("rm", 32, bucket)
        assert key_slot(channel.encode()) == key_slot(bucket_segments(32)[bucket].encode())


def test_aggregates_spread_over_the_buckets() -> None:
    counts = [0] * 64
    for n in range(6400):
        counts[bucket_of(f"campaign-{n}", 64)] += 1
    assert min(counts) > 50 and max(counts) < 150


def _share(
    members: list[bytes], cursor: bytes, limit: int, budget: int, descending: bool
) -> tuple[bytes, list[bytes]]:
    """What lua/list_campaigns.lua answers for one bucket's index (every member kept)."""
    ordered = sorted(members, reverse=descending)
    after = [m for m in ordered if not cursor or (m < cursor if descending else m > cursor)]
    taken = after[: min(limit + 1, budget)]
    exhausted = len(taken) == len(after)
    return (b"" if exhausted else taken[-1]), taken


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize(("limit", "budget"), [(5, 1000), (7, 3), (1, 1), (20, 4)])
def test_paging_through_merged_buckets_returns_every_member_once_in_order(
    descending: bool, limit: int, budget: int
) -> None:
    rng = random.Random(7)
    buckets: list[list[bytes]] = [[] for _ in range(6)]
    everything = []
    for n in range(97):
        member = f"{rng.randrange(10**6):013d}".encode() + b"\x00" + f"id{n}".encode()
        buckets[rng.randrange(6)].append(member)
        everything.append(member)
    seen: list[bytes] = []
    cursor = b""
    for _ in range(1000):
        shares = [_share(members, cursor, limit, budget, descending) for members in buckets]
        page, following = merge_bucket_pages(shares, limit, descending)
        assert len(page) <= limit
        seen += page
        if following is None:
            break
        cursor = following
    assert seen == sorted(everything, reverse=descending)


def test_a_full_last_page_has_no_cursor() -> None:
    shares = [(b"", [b"a", b"c"]), (b"", [b"b"])]
    assert merge_bucket_pages(shares, 3, False) == ([b"a", b"b", b"c"], None)
    assert merge_bucket_pages(shares, 2, False) == ([b"a", b"b"], b"b")
