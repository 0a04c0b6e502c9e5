"""Gap repair on real Kafka, Redis and MongoDB: a missing version comes from the events log."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events import Topics
from projectors.adapters.metrics import REDIS_LOSS
from projectors.entrypoints.projectors import Projectors
from readmodels.generations import live_generations
from readmodels.keyspace import CampaignKeys, generation_base, sentinel_key
from readmodels.status import read_status
from readmodels.stored_documents import document_json
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import EventProducer, record_in_log, wait_until
from tests.integration.read_side.workload import new_campaign


@pytest.mark.parametrize("quarantined", [False, True], ids=["lost", "quarantined-by-the-relay"])
async def test_a_version_missing_from_kafka_is_filled_from_the_log(
    settings: Settings, redis: Redis, producer: EventProducer, quarantined: bool
) -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    await record_in_log(settings, campaign.events)
    if quarantined:  # as the relay marks an event Kafka can never take: still the log's event
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
        mark = {"reason": "too large for Kafka", "kind": "too_large", "at": "2026-12-07T06:00:00Z"}
        await client[settings.mongo_db]["events"].update_one(
            {"_id": str(campaign.events[1].event_id)}, {"$set": {"quarantine": mark}}
        )
        await client.close()
    keys = CampaignKeys(generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets)
    fast = settings.model_copy(update={"gap_repair_delay_seconds": 0.5})
    async with Projectors(fast):
        await producer.publish([campaign.events[0], campaign.events[2]])  # v2 never reaches Kafka

        async def at_v3() -> bool:
            return await redis.hget(keys.campaign(campaign.aggregate_id), "v") == b"3"

        await wait_until(at_v3, 20, "the gap to be filled from the log")

        async def counted() -> bool:  # the status is written right after the repair
            status = (await read_status(redis, settings.redis_prefix, ["campaigns"]))["campaigns"]
            return "last_gap" in status

        await wait_until(counted, 20, "the repair in the projection's status")
    stored = await redis.hgetall(keys.campaign(campaign.aggregate_id))
    document = orjson.loads(document_json(stored.get(b"doc") or b"{}"))
    # What the read models looked like, if the campaign is gone: a rebuild (the pointers moved,
    # the loss counter grew) or something outside deleting keys (a FLUSHALL of the shared Redis).
    context = {
        "stored": stored,
        "live": await live_generations(redis, settings.redis_prefix),
        "sentinel": await redis.exists(sentinel_key(settings.redis_prefix)),
        "losses_seen_by_this_process": REDIS_LOSS._value.get(),
        "keys_under_prefix": len([k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:*")]),
    }
    assert (document.get("version"), document.get("status")) == (3, "paused"), context
    assert await redis.scard(keys.parked_set(keys.bucket_of(campaign.aggregate_id))) == 0
    status = (await read_status(redis, settings.redis_prefix, ["campaigns"]))["campaigns"]
    assert status["gaps_repaired_total"] == "1"
    assert f"campaign:{campaign.aggregate_id} filled [2]" in status["last_gap"]


async def test_a_gap_the_log_cannot_fill_is_dead_lettered_with_its_reason(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    await record_in_log(settings, [campaign.events[0], campaign.events[2]])  # v2 exists nowhere
    topics = Topics(settings.topic_prefix)
    fast = settings.model_copy(update={"gap_repair_delay_seconds": 0.5})
    keys = CampaignKeys(generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets)
    consumer = AIOKafkaConsumer(
        Topics.dlq(topics.campaigns),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    letters: list = []
    try:
        async with Projectors(fast):
            await producer.publish([campaign.events[0], campaign.events[2]])

            async def unfillable_letters() -> bool:
                batch = await consumer.getmany(timeout_ms=200)
                letters.extend(r for records in batch.values() for r in records)
                groups = {dict(r.headers).get("dlq_consumer_group") for r in letters}
                return len(groups) >= 2  # the campaigns and the stats projections each

            await wait_until(unfillable_letters, 20, "the unfillable gap's dead letters")

            # The parked set and the projector's status follow the dead letters (written after).
            async def recorded() -> bool:
                status = (await read_status(redis, settings.redis_prefix, ["campaigns"]))["campaigns"]
                parked = await redis.scard(keys.parked_set(keys.bucket_of(campaign.aggregate_id)))
                return parked == 0 and status.get("gaps_unfillable_total") == "1"

            await wait_until(recorded, 10, "the unfillable gap recorded in the projector's status")
    finally:
        await consumer.stop()
    for record in letters:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["dlq_error_type"] == "gap_unfillable"
        assert "versions [2]" in headers["dlq_reason"]
        assert orjson.loads(record.value or b"{}")["aggregate_version"] == 3
    assert await redis.hget(keys.campaign(campaign.aggregate_id), "v") == b"1"  # never skipped
