"""List pages under selective filters, on real Kafka and Redis (standalone, or the Redis Cluster
with CAMPAIGNS_REDIS_CLUSTER_NODES): every page but the last is full, whatever the scan budget
of one call, and the keyset cursors walk every match once, in order.

The scan budget is set as small as it goes (each bucket's call examines 2 (limit + 1) index
members), and the matches sit behind many campaigns that do not match: one call finds none of
them, so a page is only full when the list goes on from where a call stopped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from readmodels.campaigns import fold_campaign
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import (
    EventProducer,
    QueryClient,
    query_app,
    running_projectors,
    wait_records,
)
from tests.integration.read_side.workload import START, Aggregate, new_campaign

LIMIT = 3


def _workload() -> list[Aggregate]:
    """60 campaigns of owner-1 created a millisecond apart, and 20 of owner-2's; among owner-1's,
    the oldest few are the matches (active, tagged `rare`, on sms), so a newest-first walk
    passes every other campaign first."""
    campaigns = []
    for n in range(80):
        owner = "owner-1" if n < 60 else "owner-2"
        rare = n in (1, 3, 4, 5, 6, 8, 9, 10)
        campaign = new_campaign(
            owner,
            clock=START + timedelta(seconds=n),
            tags=["rare", "x"] if rare else ["common"],
            channel="sms" if n % 2 else "email",
        )
        if n < 7 or n in (9, 10):
            campaign.then("CampaignActivated")
        campaigns.append(campaign)
    return campaigns


async def _walk(query: QueryClient, headers: dict[str, str], params: dict[str, Any]) -> list[dict]:
    """Every page of the list: all but the last hold `limit` items."""
    items: list[dict] = []
    pages: list[int] = []
    cursor = None
    while True:
        answer = await query.http.get(
            "/campaigns",
            params={**params, "limit": LIMIT, **({"cursor": cursor} if cursor else {})},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items += page["items"]
        pages.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 100, "the walk does not end"
    assert all(size == LIMIT for size in pages[:-1]), f"short pages: {pages} ({params})"
    return items


# The topology's buckets (1 standalone, 32 on a cluster), and 4: 20 campaigns a bucket, more than
# one call examines, so the k-way merge of buckets stopped at different places is exercised.
@pytest.mark.parametrize("buckets", [None, 4])
@pytest.mark.parametrize("sort", ["-created_at", "created_at", "name"])
async def test_selective_filters_fill_every_page_with_stable_cursors(
    settings: Settings, redis: Redis, producer: EventProducer, sort: str, buckets: int | None
) -> None:
    campaigns = _workload()
    events = [e for c in campaigns for e in c.events]
    tight = settings.model_copy(
        update={
            "list_scan_budget": 1,
            "campaign_cache_bytes": 0,
            "redis_buckets": buckets or settings.redis_buckets,
        }
    )
    async with running_projectors(tight), query_app(tight) as query:
        await producer.publish(events)
        await wait_records(redis, settings, "campaigns", len(events))
        states = [s for s in (fold_campaign(c.events) for c in campaigns) if s]
        field = sort.lstrip("-")
        ordered = sorted(
            states,
            key=lambda s: (s[field].casefold() if field == "name" else s[field], s["id"]),
            reverse=sort.startswith("-"),
        )
        # (whose list, its filters): a user's walks their own index, an admin's all campaigns'.
        cases: list[tuple[str | None, dict[str, str]]] = [
            ("owner-1", {"status": "active"}),
            ("owner-1", {"tag": "rare"}),
            ("owner-1", {"tag": "rare", "status": "active", "channel": "sms"}),
            (None, {"tag": "rare"}),
            (None, {"status": "active", "channel": "email"}),
            (None, {"tag": "x", "owner_id": "owner-1"}),
        ]
        for user, filters in cases:
            headers = query.token(user) if user else query.admin()
            owner = user or filters.get("owner_id")
            got = await _walk(query, headers, {**filters, "sort": sort})

            def matches(s: dict[str, Any], f: dict[str, str] = filters, o: str | None = owner) -> bool:
                return (
                    f.get("status", s["status"]) == s["status"]
                    and f.get("channel", s["channel"]) == s["channel"]
                    and ("tag" not in f or f["tag"] in s["tags"])
                    and (o is None or s["owner_id"] == o)
                )

            expected = [s["id"] for s in ordered if matches(s)]
            assert len(expected) > LIMIT, filters
            assert [item["id"] for item in got] == expected, filters
