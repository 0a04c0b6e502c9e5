"""The lag sampler against real Kafka and Redis: lag per group and partition, dead letters, throughput."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from events import Topics
from projectors.entrypoints.projectors import Projectors
from projectors.monitoring.sampler import KafkaOffsetReader, LagSampler
from readmodels.groups import monitored_groups
from readmodels.keyspace import lag_sample_key, monitor_channel, throughput_history_key
from service_runtime.redis_client import open_pubsub
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import EventProducer, wait_records, wait_until
from tests.integration.read_side.workload import new_campaign, new_user


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[EventProducer]:
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await kafka.start()
    yield EventProducer(settings, kafka)
    await kafka.stop()


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[KafkaOffsetReader]:
    offsets = KafkaOffsetReader(settings.kafka_bootstrap, "monitor-test")
    yield offsets
    await offsets.close()


def sampler(settings: Settings, redis: Redis, reader: KafkaOffsetReader, interval: float = 1.0) -> LagSampler:
    return LagSampler(
        redis,
        settings.redis_prefix,
        monitored_groups(settings),
        Topics(settings.topic_prefix),
        reader,
        interval,
    )


def group(sample: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in sample["groups"] if g["name"] == name)


async def test_lag_dead_letters_and_throughput_are_sampled_stored_and_published(
    settings: Settings, redis: Redis, producer: EventProducer, reader: KafkaOffsetReader
) -> None:
    topics = Topics(settings.topic_prefix)
    lag_sampler = sampler(settings, redis, reader)
    pubsub = await open_pubsub(redis)
    await pubsub.subscribe(monitor_channel(settings.redis_prefix))

    campaigns = [new_campaign("alice") for _ in range(3)]
    for campaign in campaigns:
        campaign.then("CampaignActivated", actor="alice")
    users = [new_user() for _ in range(2)]
    await producer.publish([e for a in [*campaigns, *users] for e in a.events])
    await producer.publish_raw(Topics.dlq(topics.campaigns), b"not an event")
    await producer.publish_raw(Topics.dlq(topics.campaigns), b"nor this")

    first = await lag_sampler.sample_once()
    assert first is not None
    # Nothing consumes yet: every group is behind by all of its topics' events.
    assert group(first, "campaigns")["lag"] == 6
    assert group(first, "users")["lag"] == 2
    assert group(first, "stats")["lag"] == 8
    assert group(first, "reports")["lag"] == 6
    assert group(first, "notifications")["lag"] == 2
    assert len(group(first, "campaigns")["partitions"]) == settings.kafka_partitions
    assert first["dead_letters"] == {Topics.dlq(topics.users): 0, Topics.dlq(topics.campaigns): 2}

    async with Projectors(settings):
        await wait_records(redis, settings, "stats", 8)

        async def projections_caught_up() -> bool:
            await asyncio.sleep(1.0)  # one sample per interval (the slot)
            sample = await lag_sampler.sample_once()
            return sample is not None and all(
                group(sample, name)["lag"] == 0 for name in ("campaigns", "users", "stats")
            )

        await wait_until(projections_caught_up, 30, "the projections' commits to show as no lag")

    latest = orjson.loads(await redis.get(lag_sample_key(settings.redis_prefix)))
    assert group(latest, "reports")["lag"] == 6  # no worker ran
    history = [
        orjson.loads(x) for x in await redis.lrange(throughput_history_key(settings.redis_prefix), 0, -1)
    ]
    assert history, "a second sample records throughput"
    assert sum(h["projected"] for h in history) == 8

    published: list[dict[str, Any]] = []
    while (message := await pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] == "message":
            published.append(orjson.loads(message["data"]))
    await pubsub.aclose()
    assert {m["type"] for m in published} == {"lag", "throughput"}
    assert all("totals" not in m for m in published)

    lag_of_reports = REGISTRY.get_sample_value(
        "consumer_group_lag_records",
        {"group": f"{settings.topic_prefix}worker.reports", "topic": topics.campaigns, "partition": "0"},
    )
    assert lag_of_reports is not None
    assert REGISTRY.get_sample_value("dead_letter_records", {"topic": Topics.dlq(topics.campaigns)}) == 2


async def test_one_sample_per_interval_however_many_projectors_run(
    settings: Settings, redis: Redis, reader: KafkaOffsetReader
) -> None:
    other_reader = KafkaOffsetReader(settings.kafka_bootstrap, "monitor-test-2")
    try:
        one, two = sampler(settings, redis, reader, 5.0), sampler(settings, redis, other_reader, 5.0)
        assert await one.sample_once() is not None
        assert await two.sample_once() is None
    finally:
        await other_reader.close()
