"""Send records on the real Redis: one claim at a time, "sent" kept for good, a lapsed claim taken over."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from service_runtime.settings import Settings
from workers.adapters.send_records import RedisSendRecords


async def test_a_claim_excludes_others_until_released_and_sent_is_kept_without_expiry(
    settings: Settings,
) -> None:
    redis = aioredis.from_url(settings.redis_url)
    records = RedisSendRecords(redis, settings.redis_prefix, "welcome")
    try:
        assert await records.claim("ev-1", "a") == "claimed"
        assert await records.claim("ev-1", "b") == "held"
        await records.release("ev-1", "b")  # not b's claim: it stands
        assert await records.claim("ev-1", "b") == "held"
        await records.release("ev-1", "a")
        assert await records.claim("ev-1", "b") == "claimed"

        await records.mark_sent("ev-1")
        assert await records.claim("ev-1", "c") == "sent"
        assert await redis.ttl(records.key("ev-1")) == -1
    finally:
        await redis.aclose()


async def test_the_claim_of_a_crashed_sender_lapses_and_the_next_delivery_takes_it(
    settings: Settings,
) -> None:
    redis = aioredis.from_url(settings.redis_url)
    records = RedisSendRecords(redis, settings.redis_prefix, "welcome", claim_ttl_seconds=0.3)
    try:
        assert await records.claim("ev-2", "crashed") == "claimed"
        assert await records.claim("ev-2", "next") == "held"
        await asyncio.sleep(0.5)
        assert await records.claim("ev-2", "next") == "claimed"
    finally:
        await redis.aclose()
