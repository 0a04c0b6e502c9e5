"""The lag sampler: every few seconds, Kafka's offsets into Redis (JSON) and onto the monitor channel.

It runs inside the projectors process, which already holds Kafka and Redis, and reads the groups
of every projection and worker through the admin API (committed offsets) and a group-less
consumer (log start and end offsets). With several projectors instances, a short-lived slot in
Redis lets one of them sample each interval, so the feed carries one sample, not one per instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge
from redis.asyncio import Redis

from events import Topics
from projectors.monitoring.lag import Offsets, Partition, lag_sample, throughput_sample
from readmodels.groups import MonitoredGroup, monitored_groups
from readmodels.keyspace import (
    lag_sample_key,
    monitor_channel,
    sampler_slot_key,
    throughput_history_key,
)
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

# How far back the throughput chart reaches.
HISTORY_SECONDS = 15 * 60
KAFKA_TIMEOUT_SECONDS = 10.0

CONSUMER_LAG = Gauge(
    "consumer_group_lag_records",
    "Records a consumer group has not committed yet, per partition (sampled from Kafka)",
    ["group", "topic", "partition"],
)
DEAD_LETTERS = Gauge("dead_letter_records", "Records in a dead-letter topic (sampled from Kafka)", ["topic"])


class KafkaOffsetReader:
    """Reads partitions, log bounds and committed offsets; clients opened on first use."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            await self.close()
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            self._admin, self._consumer = admin, consumer
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def read(
        self, groups: Sequence[MonitoredGroup], topics: Sequence[str]
    ) -> tuple[dict[str, list[int]], Offsets]:
        admin, consumer = await self._clients()
        partitions: dict[str, list[int]] = {}
        for described in await admin.describe_topics(list(topics)):
            if described.get("error_code") == 0:
                partitions[described["topic"]] = sorted(p["partition"] for p in described["partitions"])
        everything = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        starts = await consumer.beginning_offsets(everything) if everything else {}
        ends = await consumer.end_offsets(everything) if everything else {}
        committed: dict[str, dict[Partition, int]] = {}
        for group in groups:
            mine = [TopicPartition(t, p) for t in group.topics for p in partitions.get(t, ())]
            if not mine:
                continue
            offsets = await admin.list_consumer_group_offsets(group.group_id, partitions=mine)
            committed[group.group_id] = {
                (tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            }
        return partitions, Offsets(
            starts={(tp.topic, tp.partition): offset for tp, offset in starts.items()},
            ends={(tp.topic, tp.partition): offset for tp, offset in ends.items()},
            committed=committed,
        )

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


class LagSampler:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        groups: Sequence[MonitoredGroup],
        topics: Topics,
        reader: KafkaOffsetReader,
        interval_seconds: float,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.groups = list(groups)
        self.published_topics = [topics.users, topics.campaigns]
        self.dead_letter_topics = [Topics.dlq(t) for t in self.published_topics]
        self.reader = reader
        self.interval_seconds = interval_seconds
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.history_length = max(2, int(HISTORY_SECONDS / interval_seconds))

    async def sample_once(self) -> dict[str, Any] | None:
        """Take, store and publish one sample; None when another instance has this interval."""
        slot = int(self.interval_seconds * 800)  # shorter than the interval: the next round is free
        if not await self.redis.set(sampler_slot_key(self.prefix), self.instance, nx=True, px=max(slot, 1)):
            return None
        sampled_at = datetime.now(UTC)
        async with asyncio.timeout(KAFKA_TIMEOUT_SECONDS):  # not wait_for: see service_runtime.background
            partitions, offsets = await self.reader.read(
                self.groups, [*self.published_topics, *self.dead_letter_topics]
            )
        sample = lag_sample(
            self.groups, partitions, offsets, self.dead_letter_topics, self.published_topics, sampled_at
        )
        sample["interval_seconds"] = self.interval_seconds
        self._observe(sample)
        previous_raw = await self.redis.get(lag_sample_key(self.prefix))
        previous = orjson.loads(previous_raw) if previous_raw else None
        throughput = throughput_sample(previous, sample)
        expiry = max(60, int(self.interval_seconds * 12))
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(lag_sample_key(self.prefix), orjson.dumps(sample), ex=expiry)
        messages = [orjson.dumps({"type": "lag", **_without_totals(sample)})]
        if throughput is not None:
            history = throughput_history_key(self.prefix)
            pipe.lpush(history, orjson.dumps(throughput))
            pipe.ltrim(history, 0, self.history_length - 1)
            pipe.expire(history, HISTORY_SECONDS)
            messages.append(orjson.dumps({"type": "throughput", **throughput}))
        await pipe.execute()
        # Published after the pipeline, not in it: redis-py's cluster pipeline refuses PUBLISH.
        for message in messages:
            await self.redis.publish(monitor_channel(self.prefix), message)
        return sample

    def _observe(self, sample: dict[str, Any]) -> None:
        for group in sample["groups"]:
            for row in group["partitions"]:
                CONSUMER_LAG.labels(group["group_id"], row["topic"], str(row["partition"])).set(row["lag"])
        for topic, count in sample["dead_letters"].items():
            DEAD_LETTERS.labels(topic).set(count)

    async def run(self) -> None:
        """Sample every interval until cancelled; an unreachable Kafka or Redis only logs."""
        while True:
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lag not sampled: %s", exc or type(exc).__name__)
                await self.reader.close()  # reconnect on the next round
            await asyncio.sleep(self.interval_seconds)


def _without_totals(sample: dict[str, Any]) -> dict[str, Any]:
    # The totals only serve the next throughput sample; the feed and the state leave them out.
    return {k: v for k, v in sample.items() if k != "totals"}


@contextlib.asynccontextmanager
async def sampling(settings: Settings, redis: Redis) -> AsyncIterator[LagSampler]:
    """Run the sampler in the background for the duration of the block."""
    reader = KafkaOffsetReader(settings.kafka_bootstrap, f"{settings.topic_prefix}monitor-lag")
    sampler = LagSampler(
        redis,
        settings.redis_prefix,
        monitored_groups(settings),
        Topics(settings.topic_prefix),
        reader,
        settings.monitor_sample_seconds,
    )
    task = asyncio.create_task(sampler.run(), name="lag-sampler")
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.close()
