"""The replay's Redis writer: several pipelines in flight, yet each aggregate's events in order."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from events import EventEnvelope
from projectors.adapters.digest import generation_digest
from projectors.adapters.redis_projection import campaigns_projection
from projectors.replay.adapters.campaign_folder import GenerationMoved
from projectors.replay.adapters.redis_writer import LaneWriter
from projectors.replay.application.ports import ClosingBatch
from projectors.replay.domain.tally import ProjectionTally
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


def out_of_order(events: list[EventEnvelope]) -> list[EventEnvelope]:
    """`events` with every fourth campaign's first update moved after its next event (parked, then
    drained), and one duplicate of each tenth event (a redelivery)."""
    moved = list(events)
    seen: dict[str, int] = {}
    for position, envelope in enumerate(events):
        seen[envelope.aggregate_id] = seen.get(envelope.aggregate_id, 0) + 1
        if seen[envelope.aggregate_id] == 2 and hash(envelope.aggregate_id) % 4 == 0:
            later = next(
                (
                    n
                    for n in range(position + 1, len(moved))
                    if moved[n].aggregate_id == envelope.aggregate_id
                ),
                None,
            )
            if later is not None:
                moved[position], moved[later] = moved[later], moved[position]
    return [e for n, e in enumerate(moved) for _ in range(2 if n % 10 == 0 else 1)]


@pytest.mark.parametrize(("fold", "write"), [(7, 3), (10_000, 2_000)])
async def test_folding_in_windows_gives_the_plain_apply_result_parked_duplicates_and_refusals_included(
    settings: Settings, redis: Redis, fold: int, write: int
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    orphan = Aggregate("campaign")
    orphan.then("CampaignUpdated", {"name": "never created"})
    events = [*orphan.events, *out_of_order(interleave(mixed_workload(60, ["owner-a", "owner-b"])))]
    writer = LaneWriter(
        redis, [(projection, "campaigns.folded")], batch_size=16, fold_campaigns=fold, write_campaigns=write
    )
    await writer.start()
    try:
        for start in range(0, len(events), 23):
            await writer.write(events[start : start + 23])
        await writer.flush()
    finally:
        await writer.close()
    plain = ProjectionTally()
    for start in range(0, len(events), 23):  # as the live projector would take them
        plain.add(
            await projection.apply(redis, "campaigns.plain", events[start : start + 23], announce=False)
        )

    folded = writer.tallies["campaigns"]
    assert folded.parked > 0 and folded.duplicates > 0 and folded.refused == 1
    assert (folded.applied, folded.parked, folded.duplicates, folded.refused) == (
        plain.applied,
        plain.parked,
        plain.duplicates,
        plain.refused,
    )
    assert await generation_digest(redis, settings.redis_prefix, "campaigns.folded") == (
        await generation_digest(redis, settings.redis_prefix, "campaigns.plain")
    )


async def test_a_campaign_another_writer_moved_during_the_fold_fails_the_write_instead_of_guessing(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    (campaign,) = mixed_workload(1, ["owner-a"])
    first, *rest = campaign.events
    writer = LaneWriter(redis, [(projection, "campaigns.moved")])
    await writer.start()
    try:
        await writer.write([first])
        await projection.apply(redis, "campaigns.moved", [first], announce=False)  # another writer
        await writer.write(rest)
        with pytest.raises(GenerationMoved, match=r"campaigns\.moved was written by another writer"):
            await writer.flush()
    finally:
        await writer.close()


async def test_once_shared_the_campaigns_go_through_the_guarded_apply_that_re_plans_what_moved(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    (campaign,) = mixed_workload(1, ["owner-a"])
    first, *rest = campaign.events
    writer = LaneWriter(redis, [(projection, "campaigns.shared")])
    await writer.start()
    try:
        writer.shared()
        await writer.write([first])
        await projection.apply(redis, "campaigns.shared", [first], announce=False)  # the live projector
        await writer.write(rest)
        await writer.flush()
    finally:
        await writer.close()
    await projection.apply(redis, "campaigns.plain", campaign.events, announce=False)

    assert await generation_digest(redis, settings.redis_prefix, "campaigns.shared") == (
        await generation_digest(redis, settings.redis_prefix, "campaigns.plain")
    )


async def test_the_campaigns_held_stay_within_the_window_what_is_written_is_let_go_at_once(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    events = interleave(mixed_workload(120, ["owner-a", "owner-b"]))
    writer = LaneWriter(redis, [(projection, "campaigns.held")], fold_campaigns=10, write_campaigns=2)
    folder = writer._folders["campaigns"]
    held: list[int] = []
    await writer.start()
    try:
        for start in range(0, len(events), 5):
            await writer.write(events[start : start + 5])
            held.append(len(folder._folded) + len(folder._writing))
        await writer.flush()
    finally:
        await writer.close()
    await projection.apply(redis, "campaigns.plain", events, announce=False)

    # The window being folded and what is left of the one being written: 10 together (a written
    # window kept until the next one is full made it 15 here).
    assert max(held) == 10
    assert await generation_digest(redis, settings.redis_prefix, "campaigns.held") == (
        await generation_digest(redis, settings.redis_prefix, "campaigns.plain")
    )


async def test_a_closing_batch_writes_the_window_out_before_it_is_full(
    settings: Settings, redis: Redis
) -> None:
    """After a `ClosingBatch` none of the campaigns held has an event left (a Kafka partition was
    read to its end): they are written then, and the window starts empty for the next partition."""
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    first = interleave(mixed_workload(30, ["owner-a"]))
    second = interleave(mixed_workload(20, ["owner-b"]))
    writer = LaneWriter(redis, [(projection, "campaigns.closed")], fold_campaigns=10_000)
    folder = writer._folders["campaigns"]
    await writer.start()
    try:
        await writer.write(first[:-7])
        assert len(folder._folded) == 30 and not folder._writing  # held, the window far from full
        await writer.write(ClosingBatch(first[-7:]))
        assert not folder._folded  # handed to the write, before any flush
        await folder._written()
        await projection.apply(redis, "campaigns.first", first, announce=False)
        assert await generation_digest(redis, settings.redis_prefix, "campaigns.closed") == (
            await generation_digest(redis, settings.redis_prefix, "campaigns.first")
        )
        await writer.write(second)
        assert len(folder._folded) == 20  # the next partition's campaigns only
        await writer.flush()
    finally:
        await writer.close()
    await projection.apply(redis, "campaigns.first", second, announce=False)

    assert await generation_digest(redis, settings.redis_prefix, "campaigns.closed") == (
        await generation_digest(redis, settings.redis_prefix, "campaigns.first")
    )
