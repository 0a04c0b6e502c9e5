"""Figures 2 and 5: the projector process and the replay over events already in Kafka.

The projector is measured as the real process (`campaigns serve projectors` on the load run's
own topics and keys), timed by its consumer group's committed offsets: from the first commit
to the commit that reaches the end of the topic. The replay folds the same topic into a fresh
generation through `Projection.apply` (announce=False), as the replay tool does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from bench.environment import topic_partitions, wait_for_group
from bench.memory import process_tree_memory
from bench.raw_limits import Rate
from events import decode_event
from projectors.adapters.redis_projection import campaigns_projection
from projectors.entrypoints.projectors import consumer_group
from service_runtime.settings import Settings
from tests.support.services import RunningServices

FETCH_MAX_RECORDS = 500


@dataclass
class ProjectorRun:
    rate: Rate  # from the first committed batch to the last
    wall_seconds: float  # from the process's spawn, start-up included
    stats_seconds: float  # until the stats projection (same process, same topic) was done too
    rss_mib: float


async def projector_process(
    services: RunningServices, settings: Settings, topic: str, total: int
) -> ProjectorRun:
    spawned = time.perf_counter()
    services.start(["projectors"])
    samples = await wait_for_group(
        settings, consumer_group(settings, "campaigns"), topic, total, limit_seconds=600
    )
    first = next((t, done) for t, done in samples if done > 0)
    end = samples[-1][0]
    stats = await wait_for_group(settings, consumer_group(settings, "stats"), topic, total, limit_seconds=600)
    rss = sum(p.rss_mib for p in process_tree_memory(services.processes["projectors"].pid))
    return ProjectorRun(
        rate=Rate(total - first[1], end - first[0]),
        wall_seconds=end - spawned,
        stats_seconds=stats[-1][0] - spawned,
        rss_mib=rss,
    )


async def replay_in_process(settings: Settings, topic: str, generation: str) -> Rate:
    """Read the topic from the start to its end and apply it into `generation` (not made live)."""
    projection = campaigns_projection(settings.redis_prefix)
    redis = aioredis.from_url(settings.redis_url)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await projection.script.load(redis)
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        applied = 0
        started = time.perf_counter()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            envelopes = []
            for tp, records in batches.items():
                envelopes.extend(decode_event(r.value) for r in records)
                if tp in remaining and records and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
            if envelopes:
                result = await projection.apply(redis, generation, envelopes, announce=False)
                applied += result.applied
        seconds = time.perf_counter() - started
        return Rate(applied, seconds)
    finally:
        await consumer.stop()
        await redis.aclose()
