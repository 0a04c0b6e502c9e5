"""A Redis that lost the read models (FLUSHALL, a new empty server) on real Kafka, Redis, MongoDB.

The shared Redis serves everyone, so the loss is this test's prefix emptied: every key under it
deleted, the sentinel first (FLUSHALL is atomic, a scan-and-delete is not).
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from projectors.adapters.metrics import REDIS_LOSS
from projectors.entrypoints.projectors import Projectors
from readmodels.generations import mark_rebuilding
from readmodels.keyspace import sentinel_key
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import EventProducer, query_app, record_in_log, wait_until
from tests.integration.read_side.workload import new_campaign


async def test_after_the_read_models_are_lost_reads_are_503_until_the_rebuild_restores_every_campaign(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    campaigns = [new_campaign("owner-1") for _ in range(6)]
    for campaign in campaigns[:3]:
        campaign.then("CampaignActivated")
    events = [e for c in campaigns for e in c.events]
    await record_in_log(settings, events)
    # No in-process campaign cache: it would answer (the right version) from memory for a second.
    fast = settings.model_copy(update={"redis_loss_check_seconds": 0.5, "campaign_cache_bytes": 0})
    async with Projectors(fast), query_app(fast) as query:
        owner = query.token("owner-1")
        await producer.publish(events)

        async def versions() -> dict[str, int]:
            found = {}
            for campaign in campaigns:
                answer = await query.http.get(f"/campaigns/{campaign.aggregate_id}", headers=owner)
                assert answer.status_code in (200, 404, 503), answer.text
                found[campaign.aggregate_id] = answer.json()["version"] if answer.status_code == 200 else 0
            return found

        expected = {c.aggregate_id: c.events[-1].aggregate_version for c in campaigns}

        async def all_readable() -> bool:
            return await versions() == expected

        await wait_until(all_readable, 20, "every campaign projected")
        losses = REDIS_LOSS._value.get()

        await redis.delete(sentinel_key(settings.redis_prefix))
        keys = [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
        await redis.delete(*keys)

        statuses: set[int] = set()
        deadline = time.monotonic() + 60
        while True:
            answers = [await query.http.get(f"/campaigns/{c.aggregate_id}", headers=owner) for c in campaigns]
            for campaign, answer in zip(campaigns, answers, strict=True):
                statuses.add(answer.status_code)
                assert answer.status_code in (200, 503), (answer.status_code, answer.text)
                if answer.status_code == 503:
                    assert answer.headers["Retry-After"]
                else:  # never an old or partial state
                    assert answer.json()["version"] == expected[campaign.aggregate_id]
            if all(a.status_code == 200 for a in answers):
                break
            assert time.monotonic() < deadline, f"not readable again within 60 s: {statuses}"
            await asyncio.sleep(0.1)
        assert 503 in statuses
        assert REDIS_LOSS._value.get() == losses + 1
        assert await redis.exists(sentinel_key(settings.redis_prefix))

        # Live traffic goes on into the rebuilt generation.
        later = campaigns[0].then("CampaignPaused")
        await record_in_log(settings, [later])
        await producer.publish([later])
        expected[campaigns[0].aggregate_id] = later.aggregate_version
        await wait_until(all_readable, 20, "an event after the rebuild")


async def test_a_rebuild_cut_short_by_a_stop_is_done_again_at_the_next_start(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    """Stopped in the middle of a rebuild after a loss: the sentinel is still gone and the
    rebuilding mark still set. The next start must not take Redis for a fresh one (writing the
    sentinel over read models that lack everything): it rebuilds, and readers wait meanwhile."""
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    await record_in_log(settings, campaign.events)
    fast = settings.model_copy(update={"redis_loss_check_seconds": 0.5, "campaign_cache_bytes": 0})
    await mark_rebuilding(redis, settings.redis_prefix)  # what the interrupted rebuild left
    losses = REDIS_LOSS._value.get()
    async with Projectors(fast), query_app(fast) as query:
        owner = query.token("owner-1")
        first = await query.http.get(f"/campaigns/{campaign.aggregate_id}", headers=owner)
        assert first.status_code in (200, 503), first.text  # never a 404 from the half-built Redis

        async def readable() -> bool:
            answer = await query.http.get(f"/campaigns/{campaign.aggregate_id}", headers=owner)
            assert answer.status_code in (200, 503), answer.text
            return answer.status_code == 200 and answer.json()["version"] == 2

        await wait_until(readable, 30, "the campaign rebuilt from the log")
    assert await redis.exists(sentinel_key(settings.redis_prefix))
    assert REDIS_LOSS._value.get() == losses + 1
