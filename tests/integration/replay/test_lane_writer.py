"""The replay's Redis writer: several pipelines in flight, yet each aggregate's events in order."""

from __future__ import annotations

from redis.asyncio import Redis

from projectors.adapters.digest import generation_digest
from projectors.adapters.redis_projection import campaigns_projection
from projectors.replay.adapters.redis_writer import LaneWriter
from service_runtime.settings import Settings
from tests.integration.read_side.workload import Aggregate, interleave, mixed_workload


async def test_lanes_keep_each_aggregates_order_so_nothing_is_parked_and_the_result_is_the_plain_apply(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    events = interleave(mixed_workload(150, ["owner-a", "owner-b"]))
    writer = LaneWriter(redis, [(projection, "campaigns.lanes")], lanes=4, batch_size=16)
    await writer.start()
    try:
        for start in range(0, len(events), 37):
            await writer.write(events[start : start + 37])
        await writer.flush()
    finally:
        await writer.close()
    await projection.apply(redis, "campaigns.plain", events, announce=False)

    tally = writer.tallies["campaigns"]
    assert (tally.applied, tally.parked, tally.duplicates, tally.refused) == (len(events), 0, 0, 0)
    assert await generation_digest(redis, settings.redis_prefix, "campaigns.lanes") == (
        await generation_digest(redis, settings.redis_prefix, "campaigns.plain")
    )


async def test_an_event_the_read_model_refuses_is_counted_with_its_reason_and_the_rest_applies(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    (good,) = mixed_workload(1, ["owner-a"])
    orphan = Aggregate("campaign")
    orphan.then("CampaignUpdated", {"name": "never created"})
    writer = LaneWriter(redis, [(projection, "campaigns.refusals")])
    await writer.start()
    try:
        await writer.write([*orphan.events, *good.events])
        await writer.flush()
    finally:
        await writer.close()

    tally = writer.tallies["campaigns"]
    assert (tally.applied, tally.refused) == (len(good.events), 1)
    assert "has no creation event" in tally.refusals[0]
