"""Anti-entropy on real Kafka, Redis and MongoDB: read-model keys deleted are repaired with no operator.

The write side is played as the command side writes it: each aggregate's state document (its
version) and its events in the log, published (as the relay marks them), and on Kafka.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import orjson
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events import EventEnvelope, to_log_document
from events.envelope import utc_now
from events.log import RELAY_STATE_COLLECTION, WATERMARK_ID
from events.state_versions import STATE_COLLECTIONS
from projectors.adapters.metrics import ANTI_ENTROPY_PACE, ANTI_ENTROPY_REPAIRS
from readmodels.generations import live_generations
from readmodels.keyspace import StatsKeys, generation_base
from readmodels.status import read_status
from readmodels.versions import aggregate_state, delete_state, read_versions
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import EventProducer, query_app, running_projectors, wait_until
from tests.integration.read_side.workload import Aggregate, new_campaign, new_user


async def write_side(
    settings: Settings, aggregates: Sequence[Aggregate], events: Sequence[EventEnvelope]
) -> None:
    """The events in the log (published: the relay's watermark holds them) and each aggregate's
    state at its current version."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        db = client[settings.mongo_db]
        if events:
            recorded = utc_now()
            await db["events"].insert_many([{**to_log_document(e), "recorded_at": recorded} for e in events])
            await db[RELAY_STATE_COLLECTION].update_one(
                {"_id": WATERMARK_ID}, {"$max": {"recorded_through": recorded}}, upsert=True
            )
        for aggregate in aggregates:
            await db[STATE_COLLECTIONS[aggregate.kind]].replace_one(
                {"_id": aggregate.aggregate_id},
                {"_id": aggregate.aggregate_id, "version": aggregate.version},
                upsert=True,
            )
    finally:
        await client.close()


async def commit(
    settings: Settings,
    producer: EventProducer,
    aggregates: Sequence[Aggregate],
    events: Sequence[EventEnvelope],
) -> None:
    """What a command does, then the relay: MongoDB first, then Kafka."""
    await write_side(settings, aggregates, events)
    await producer.publish(events)


def holders(aggregate: Aggregate) -> list[str]:
    """The projections keeping a versioned state of the aggregate."""
    return ["campaigns", "stats"] if aggregate.kind == "campaign" else ["users", "stats"]


async def behind(redis: Redis, settings: Settings, aggregates: Sequence[Aggregate]) -> list[str]:
    """Every (projection, aggregate) whose read model is not at the write side's version."""
    live = await live_generations(redis, settings.redis_prefix)
    found = []
    for aggregate in aggregates:
        for projection in holders(aggregate):
            [held] = await read_versions(
                redis,
                settings.redis_prefix,
                live[projection],
                projection,
                aggregate.kind,
                [aggregate.aggregate_id],
                settings.read_model_buckets,
            )
            if held != aggregate.version:
                found.append(
                    f"{projection} {aggregate.kind}:{aggregate.aggregate_id} v{held} != v{aggregate.version}"
                )
    return found


async def test_random_read_model_keys_deleted_under_traffic_are_repaired_with_no_operator(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    rng = random.Random(18)
    owners = [new_user() for _ in range(6)]
    campaigns = [new_campaign(owners[n % len(owners)].aggregate_id) for n in range(30)]
    aggregates: list[Aggregate] = [*owners, *campaigns]
    fast = settings.model_copy(
        update={
            "anti_entropy_batch_size": 7,  # several pages per sweep
            "anti_entropy_interval_seconds": 0.2,
            "anti_entropy_grace_seconds": 0.5,
            "gap_repair_delay_seconds": 0.5,
        }
    )
    repairs_before = sum(ANTI_ENTROPY_REPAIRS.labels(p)._value.get() for p in ("campaigns", "users", "stats"))
    async with running_projectors(fast):
        await commit(fast, producer, aggregates, [e for a in aggregates for e in a.events])

        async def all_projected() -> bool:
            return not await behind(redis, settings, aggregates)

        await wait_until(all_projected, 30, "every aggregate projected")

        live = await live_generations(redis, settings.redis_prefix)
        deleted = []
        for round_ in range(3):
            # Traffic: a few campaigns move on ...
            moving = rng.sample(campaigns, 5)
            events = [c.then("CampaignUpdated", {"name": f"round {round_}"}) for c in moving]
            await commit(fast, producer, moving, events)
            # ... while random read-model keys vanish (a lost write, a hand at the console).
            for aggregate in rng.sample(aggregates, 4):
                projection = rng.choice(holders(aggregate))
                state = aggregate_state(
                    settings.redis_prefix,
                    live[projection],
                    projection,
                    aggregate.kind,
                    aggregate.aggregate_id,
                    settings.read_model_buckets,
                )
                deleted.append(str(state))
                await delete_state(redis, state)

        async def repaired() -> bool:
            return not await behind(redis, settings, aggregates)

        await wait_until(repaired, 30, f"the deleted keys repaired: {deleted}")

        # Nothing counted twice: the stats counters hold each campaign once.
        async def stats_exact() -> bool:
            gens = await live_generations(redis, settings.redis_prefix)
            buckets = settings.read_model_buckets
            keys = StatsKeys(generation_base(settings.redis_prefix, gens["stats"]), buckets)
            totals = {b"campaigns.total": 0, b"users.total": 0}
            for bucket in range(buckets):  # the counters are sharded by bucket
                counts = await redis.hgetall(keys.counts(bucket))
                for name in totals:
                    totals[name] += int(counts.get(name, 0))
            return (totals[b"campaigns.total"], totals[b"users.total"]) == (30, 6)

        await wait_until(stats_exact, 30, "the stats counters exact")
        assert not await behind(redis, settings, aggregates)
    statuses = await read_status(redis, settings.redis_prefix, ["campaigns", "users", "stats"])
    assert sum(int(s.get("anti_entropy_repairs_total", 0)) for s in statuses.values()) >= 1, statuses
    assert all(int(s.get("dead_lettered_total", 0)) == 0 for s in statuses.values()), statuses
    repairs_after = sum(ANTI_ENTROPY_REPAIRS.labels(p)._value.get() for p in ("campaigns", "users", "stats"))
    assert repairs_after > repairs_before


async def test_every_key_of_one_campaign_deleted_is_readable_again_at_its_version_within_15_s(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    """The acceptance check, with the default anti-entropy settings."""
    owner = new_user()
    campaign = new_campaign(owner.aggregate_id)
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    others = [new_campaign(owner.aggregate_id) for _ in range(3)]
    aggregates = [owner, campaign, *others]
    quiet = settings.model_copy(update={"campaign_cache_bytes": 0})
    async with running_projectors(quiet), query_app(quiet) as query:
        await commit(quiet, producer, aggregates, [e for a in aggregates for e in a.events])
        headers = query.token(owner.aggregate_id)

        async def readable() -> bool:
            answer = await query.http.get(f"/campaigns/{campaign.aggregate_id}", headers=headers)
            return answer.status_code == 200 and answer.json()["version"] == 3

        await wait_until(readable, 30, "the campaign projected")
        live = await live_generations(redis, settings.redis_prefix)
        for projection in ("campaigns", "stats"):
            await delete_state(
                redis,
                aggregate_state(
                    settings.redis_prefix,
                    live[projection],
                    projection,
                    "campaign",
                    campaign.aggregate_id,
                    settings.read_model_buckets,
                ),
            )
        answer = await query.http.get(f"/campaigns/{campaign.aggregate_id}", headers=headers)
        assert answer.status_code == 404, answer.text  # gone, and nothing will arrive from Kafka

        await wait_until(readable, 15, "the campaign readable again at v3")
        answer = await query.http.get(f"/campaigns/{campaign.aggregate_id}", headers=headers)
        assert orjson.loads(answer.content)["status"] == "paused"

        async def stats_recounted() -> bool:  # its stats contribution, by a rebuild of stats
            return not await behind(redis, settings, aggregates)

        await wait_until(stats_recounted, 30, "the stats projection recounted")


async def test_the_pass_yields_to_live_events_and_walks_at_its_full_rate_once_they_stop(
    settings: Settings, producer: EventProducer
) -> None:
    """While the live consumers apply events the pass's pace falls (`walk_pace`); idle, it is the
    full `anti_entropy_keys_per_second` again."""
    owner = new_user()
    campaigns = [new_campaign(owner.aggregate_id) for _ in range(20)]
    full = 2000.0
    paced = settings.model_copy(
        update={
            "anti_entropy_keys_per_second": full,
            "anti_entropy_busy_keys_per_second": 200.0,
            "anti_entropy_interval_seconds": 0.2,
        }
    )
    async with running_projectors(paced):
        await commit(paced, producer, [owner, *campaigns], [e for a in [owner, *campaigns] for e in a.events])
        paces = []
        for round_ in range(30):  # 20 events a round, each applied by the campaigns and stats projections
            events = [c.then("CampaignUpdated", {"name": f"round {round_}"}) for c in campaigns]
            await commit(paced, producer, campaigns, events)
            paces.append(ANTI_ENTROPY_PACE._value.get())
            await asyncio.sleep(0.1)
        assert min(paces) < full, paces

        async def idle_pace() -> bool:
            return bool(ANTI_ENTROPY_PACE._value.get() == full)

        await wait_until(idle_pace, 15, "the full pace once no event arrives")
