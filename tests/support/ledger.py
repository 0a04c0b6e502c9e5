"""Accounting for fault tests: what the events log holds, what reached Kafka and the read models.

The events log in MongoDB is the truth. Each event accepted there must be applied exactly once
in every read model: `projected` counts versions reached per aggregate, `lost` what is missing,
and `duplicates applied` what the stats projection counted beyond the log (it increments a
per-minute counter inside the same atomic script as each applied event, so a second apply of
one event would show). A clean rebuild applies the whole log into scratch generations; equal
digests mean the live read models are exactly what the log says they should be.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import ASCENDING, AsyncMongoClient
from redis.asyncio import Redis

from events import EventEnvelope, Topics, from_log_document
from projectors.adapters.digest import generation_digest
from projectors.adapters.redis_projection import all_projections
from readmodels.campaigns import unpacked_id
from readmodels.generations import live_generations
from readmodels.keyspace import StatsKeys, generation_base
from service_runtime.settings import Settings
from tests.support.redis_keys import summed_hashes
from tests.support.waiting import eventually

OWNING_PROJECTION = {"campaign": "campaigns", "user": "users"}
APPLY_CHUNK = 500


async def wait_for(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.2
) -> None:
    """Poll `check` until true (test harness only); fail naming `what`."""
    await eventually(check, timeout=within, interval=every, what=what)


# ---------------------------------------------------------------------- MongoDB


async def log_envelopes(settings: Settings) -> list[EventEnvelope]:
    """The whole events log, in (aggregate, version) order."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        cursor = (
            client[settings.mongo_db]["events"]
            .find({})
            .sort([("aggregate_id", ASCENDING), ("aggregate_version", ASCENDING)])
        )
        return [from_log_document(doc) async for doc in cursor]
    finally:
        await client.close()


def max_versions(envelopes: list[EventEnvelope]) -> dict[tuple[str, str], int]:
    versions: dict[tuple[str, str], int] = {}
    for e in envelopes:
        key = (e.aggregate_type, e.aggregate_id)
        versions[key] = max(versions.get(key, 0), e.aggregate_version)
    return versions


async def write_side_consistency(settings: Settings) -> list[str]:
    """Every state document's version equals its newest event's; each version 1..n exactly once."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    problems: list[str] = []
    try:
        db = client[settings.mongo_db]
        events: dict[tuple[str, str], list[int]] = {}
        async for doc in db["events"].find(
            {}, {"aggregate_type": 1, "aggregate_id": 1, "aggregate_version": 1}
        ):
            events.setdefault((doc["aggregate_type"], doc["aggregate_id"]), []).append(
                doc["aggregate_version"]
            )
        states: dict[tuple[str, str], int] = {}
        for kind, collection in (("campaign", "campaigns"), ("user", "users")):
            async for doc in db[collection].find({}, {"version": 1}):
                states[(kind, doc["_id"])] = doc["version"]
        for key, versions in events.items():
            if sorted(versions) != list(range(1, len(versions) + 1)):
                problems.append(f"{key}: event versions {sorted(versions)} are not 1..n")
            if states.get(key) != max(versions):
                problems.append(f"{key}: state version {states.get(key)} but newest event {max(versions)}")
        for key, version in states.items():
            if key not in events:
                problems.append(f"{key}: state document at version {version} without any event")
    finally:
        await client.close()
    return problems


# ---------------------------------------------------------------------- Kafka


async def kafka_offsets(settings: Settings) -> int:
    """Offsets taken on the users and campaigns topics: records, aborted ones and the relay's
    transaction markers included (what a kill between publish and mark shows as extra offsets)."""
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (topics.users, topics.campaigns)
            for p in (consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
        ]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        return sum(ends[p] - starts[p] for p in partitions)
    finally:
        await consumer.stop()


async def kafka_messages(settings: Settings, within: float = 60) -> int:
    """Records on the users and campaigns topics (fresh per test, nothing ever deleted), counted by
    reading them committed: offsets over-count, since each relay transaction's commit marker takes
    an offset too."""
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (topics.users, topics.campaigns)
            for p in (consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        count = 0
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            behind = [p for p in partitions if await consumer.position(p) < ends[p]]
            if not behind:
                break
            batch = await consumer.getmany(*behind, timeout_ms=500)
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    # No public call loads one topic's metadata.
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def kafka_event_ids(settings: Settings, expected: int, within: float = 30) -> list[str]:
    """The event ids of every record on the users and campaigns topics (read from the start)."""
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        topics.users,
        topics.campaigns,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    ids: list[str] = []
    try:
        deadline = time.monotonic() + within
        while len(ids) < expected and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                ids.extend(dict(m.headers).get("event_id", b"").decode() for m in messages)
    finally:
        await consumer.stop()
    return ids


# ---------------------------------------------------------------------- Redis


async def _versions_under(redis: Redis, pattern: str, strip: str) -> dict[str, int]:
    keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
    if not keys:
        return {}
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "v")
    values = await pipe.execute()
    return {
        key.decode().rpartition(strip)[2]: int(value)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }


async def projected_versions(redis: Redis, settings: Settings) -> dict[str, dict[tuple[str, str], int]]:
    """Per live projection: the version each aggregate's read model has reached."""
    generations = await live_generations(redis, settings.redis_prefix)
    buckets = settings.read_model_buckets
    reached: dict[str, dict[tuple[str, str], int]] = {}
    for projection, generation in generations.items():
        base = generation_base(settings.redis_prefix, generation)
        found: dict[tuple[str, str], int] = {}
        if projection == "stats":
            # One field a state in its bucket's hash of states (lua/stats.lua: `version|...`).
            keys = StatsKeys(base, buckets)
            for kind, states in (("campaign", keys.campaign_states), ("user", keys.user_states)):
                for bucket in range(buckets):
                    held = await redis.hgetall(states(bucket))
                    found |= {
                        (kind, unpacked_id(field)): int(value.partition(b"|")[0])
                        for field, value in held.items()
                    }
            reached[projection] = found
            continue
        # An aggregate's key is `<base>:<its bucket's segment><kind>:<id>`: one SCAN per kind,
        # the bucket segment matched by the pattern and stripped with the rest.
        kind = "campaign" if projection == "campaigns" else "user"
        pattern = f"{base}:{kind}:*" if buckets == 1 else f"{base}:{{*}}:{kind}:*"
        found |= {(kind, k): v for k, v in (await _versions_under(redis, pattern, f"{kind}:")).items()}
        reached[projection] = found
    return reached


async def applied_by_stats(redis: Redis, settings: Settings) -> int:
    """Events the live stats projection applied (its per-minute counters, summed)."""
    generation = (await live_generations(redis, settings.redis_prefix))["stats"]
    keys = StatsKeys(generation_base(settings.redis_prefix, generation), settings.read_model_buckets)
    counters = await summed_hashes(redis, [keys.events_per_minute(b) for b in range(keys.buckets)])
    return sum(counters.values())


async def live_digests(redis: Redis, settings: Settings) -> dict[str, str]:
    generations = await live_generations(redis, settings.redis_prefix)
    return {p: await generation_digest(redis, settings.redis_prefix, g) for p, g in generations.items()}


async def rebuild(
    redis: Redis, settings: Settings, envelopes: list[EventEnvelope], tag: str
) -> dict[str, str]:
    """Apply the whole log into a scratch generation of every projection; their names by projection."""
    generations: dict[str, str] = {}
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        generation = f"{projection.name}.{tag}"
        mine = [e for e in envelopes if projection.accepts(e)]
        for start in range(0, len(mine), APPLY_CHUNK):
            await projection.apply(redis, generation, mine[start : start + APPLY_CHUNK], announce=False)
        generations[projection.name] = generation
    return generations


async def rebuild_digests(redis: Redis, settings: Settings, envelopes: list[EventEnvelope]) -> dict[str, str]:
    tag = f"{int(time.time() * 1000)}"
    generations = await rebuild(redis, settings, envelopes, tag)
    digests = {p: await generation_digest(redis, settings.redis_prefix, g) for p, g in generations.items()}
    for generation in generations.values():
        keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:{generation}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    return digests


# ---------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Verdict:
    accepted: int
    projected: int
    lost: int
    duplicates_applied: int
    digests_match: bool
    details: str

    def row(self, fault: str) -> dict[str, object]:
        return {
            "fault": fault,
            "events accepted": self.accepted,
            "events projected": self.projected,
            "lost": self.lost,
            "duplicates applied": self.duplicates_applied,
        }


async def verdict(redis: Redis, settings: Settings) -> Verdict:
    """Compare the read models with the log: counts, and digests against a clean rebuild."""
    envelopes = await log_envelopes(settings)
    expected = max_versions(envelopes)
    reached = await projected_versions(redis, settings)
    projected = 0
    lost = 0
    for (kind, aggregate_id), version in expected.items():
        owner = reached[OWNING_PROJECTION[kind]].get((kind, aggregate_id), 0)
        projected += min(owner, version)
        slowest = min(owner, reached["stats"].get((kind, aggregate_id), 0))
        lost += max(0, version - slowest)
    applied = await applied_by_stats(redis, settings)
    live = await live_digests(redis, settings)
    clean = await rebuild_digests(redis, settings, envelopes)
    differing = sorted(p for p in clean if clean[p] != live.get(p))
    return Verdict(
        accepted=len(envelopes),
        projected=projected,
        lost=lost,
        duplicates_applied=max(0, applied - len(envelopes)),
        digests_match=not differing,
        details=f"stats applied {applied}; digests differ for {differing}" if differing else "",
    )


async def wait_projected(redis: Redis, settings: Settings, within: float) -> None:
    """Until every projection has reached every aggregate's newest logged version."""
    expected = max_versions(await log_envelopes(settings))

    async def caught_up() -> bool:
        reached = await projected_versions(redis, settings)
        return all(
            reached[OWNING_PROJECTION[kind]].get((kind, a), 0) >= v
            and reached["stats"].get((kind, a), 0) >= v
            for (kind, a), v in expected.items()
        )

    await wait_for(caught_up, within, f"the read models to reach {sum(expected.values())} logged events", 0.5)
