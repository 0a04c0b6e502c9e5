"""A Redis Cluster primary killed while the projectors write: the batch waits, nothing is
dead-lettered, and every campaign reaches its last version once a replica has taken over.

On a private 3+3 cluster of this test's own (never the shared 7000-7005 nodes). Events are in the
MongoDB log too, as the command side writes them: a write the killed primary acknowledged but
had not yet replicated is lost with it, the next event of that campaign is parked behind the gap,
and gap repair fills it from the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from events import Topics
from readmodels.keyspace import CampaignKeys, generation_base
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import (
    EventProducer,
    record_in_log,
    records_seen,
    running_projectors,
)
from tests.integration.read_side.workload import Aggregate, new_campaign
from tests.support.private_redis_cluster import private_redis_cluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos

CAMPAIGNS = 120
UPDATES = 15


async def dead_letters_on(settings: Settings, topics: list[str]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(settings.kafka_partitions)]
        consumer.assign(partitions)
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[EventProducer]:
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await kafka.start()
    yield EventProducer(settings, kafka)
    await kafka.stop()


async def test_a_primary_killed_mid_batch_dead_letters_nothing(
    settings: Settings, producer: EventProducer, tmp_path: Path
) -> None:
    campaigns: list[Aggregate] = []
    for n in range(CAMPAIGNS):
        campaign = new_campaign(f"owner-{n % 7}")
        for u in range(UPDATES):
            campaign.then("CampaignUpdated", {"name": f"name {n}.{u}"})
        campaigns.append(campaign)
    everything = [e for c in campaigns for e in c.events]
    await record_in_log(settings, everything)
    first = [e for c in campaigns for e in c.events[: UPDATES // 2]]
    rest = [e for c in campaigns for e in c.events[UPDATES // 2 :]]

    with private_redis_cluster(tmp_path / "redis") as cluster:
        on_cluster = settings.model_copy(
            update={"redis_cluster_nodes": ",".join(cluster.addresses), "gap_repair_delay_seconds": 0.5}
        )
        redis = connect_redis(on_cluster)
        keys = CampaignKeys(
            generation_base(on_cluster.redis_prefix, "campaigns.1"), on_cluster.read_model_buckets
        )
        try:
            async with running_projectors(on_cluster):
                await producer.publish(first)
                await eventually(
                    lambda: _consumed_some(redis, on_cluster), 60, what="the projectors to write batches"
                )
                victim = cluster.primaries()[0]
                cluster.kill(victim)  # mid-stream: batches in flight hit the dead node
                await producer.publish(rest)

                async def all_at_last_version() -> bool:
                    try:
                        pipe = redis.pipeline(transaction=False)
                        for campaign in campaigns:
                            pipe.hget(keys.campaign(campaign.aggregate_id), "v")
                        versions = await pipe.execute()
                    except Exception:
                        return False  # the cluster is still failing over
                    return all(v == str(c.version).encode() for v, c in zip(versions, campaigns, strict=True))

                await eventually(all_at_last_version, 120, 0.5, "every campaign at its last version")
                assert victim not in cluster.primaries()
        finally:
            await redis.aclose()
    topics = Topics(settings.topic_prefix)
    assert await dead_letters_on(settings, [Topics.dlq(topics.campaigns), Topics.dlq(topics.users)]) == 0


async def _consumed_some(redis: object, settings: Settings) -> bool:
    try:
        return await records_seen(redis, settings, "campaigns") >= 200  # type: ignore[arg-type]
    except Exception:
        return False
