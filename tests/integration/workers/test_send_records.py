"""Send records on the real Redis: one claim at a time, "sent" kept for good, a lapsed claim taken over."""

from __future__ import annotations

import asyncio

from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from workers.adapters.send_records import RedisSendRecords


async def test_a_claim_excludes_others_until_released_and_sent_is_kept_without_expiry(
    settings: Settings,
) -> None:
    redis = connect_redis(settings)
    records = RedisSendRecords(redis, settings.redis_prefix, "welcome")
    try:
        assert await records.claim("ev-1", "a") == "claimed"
        assert await records.claim("ev-1", "b") == "held"
        await records.release("ev-1", "b")  # not b's claim: it stands
        assert await records.claim("ev-1", "b") == "held"
        await records.release("ev-1", "a")
        assert await records.claim("ev-1", "b") == "claimed"

        assert await records.mark_sent("ev-1", "b") == "marked"
        assert await records.claim("ev-1", "c") == "sent"
        assert await redis.ttl(records.key("ev-1")) == -1
    finally:
        await redis.aclose()


async def test_the_claim_of_a_crashed_sender_lapses_and_the_next_delivery_takes_it(
    settings: Settings,
) -> None:
    redis = connect_redis(settings)
    records = RedisSendRecords(redis, settings.redis_prefix, "welcome", claim_ttl_seconds=0.3)
    try:
        assert await records.claim("ev-2", "crashed") == "claimed"
        assert await records.claim("ev-2", "next") == "held"
        await asyncio.sleep(0.5)
        assert await records.claim("ev-2", "next") == "claimed"
    finally:
        await redis.aclose()


async def test_confirm_holds_for_the_owner_retakes_a_lapsed_claim_and_refuses_a_taken_one(
    settings: Settings,
) -> None:
    redis = connect_redis(settings)
    records = RedisSendRecords(redis, settings.redis_prefix, "welcome", claim_ttl_seconds=0.3)
    try:
        assert await records.claim("ev-3", "a") == "claimed"
        assert await records.confirm("ev-3", "a") == "confirmed"
        assert await records.confirm("ev-3", "b") == "held"
        await asyncio.sleep(0.5)  # a's claim lapses, nobody takes it: a's confirm retakes it
        assert await records.confirm("ev-3", "a") == "confirmed"
        assert await records.claim("ev-3", "b") == "held"
        await asyncio.sleep(0.5)  # lapses again, and b takes it over
        assert await records.claim("ev-3", "b") == "claimed"
        assert await records.confirm("ev-3", "a") == "held"
        # a's message went out anyway (it stalled after its confirm): the mark says so, and b,
        # which has not sent yet, stops at its own confirm.
        assert await records.mark_sent("ev-3", "a") == "claim_lost"
        assert await records.confirm("ev-3", "b") == "sent"
        assert await records.mark_sent("ev-3", "b") == "already_sent"
        assert await redis.ttl(records.key("ev-3")) == -1
    finally:
        await redis.aclose()
