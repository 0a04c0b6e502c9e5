"""The generation claim sent with the campaigns projection's reads (projectors/application/consume.py,
readmodels.generations.GenerationClaim): one round trip fewer per batch once the generation is
known, and still never a write into a generation that is no longer live, nor on a Redis that
lost the read models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from events import EventEnvelope, Topics, encode_event
from projectors.adapters.redis_projection import campaigns_projection, stats_projection
from projectors.application.consume import DeadLetter, EventRecord, ProjectionConsumer
from readmodels import generations, scripts
from readmodels.generations import ReadModelsLost, mark_whole, swap_generation
from readmodels.keyspace import CampaignKeys, generation_base, sentinel_key
from readmodels.versions import aggregate_state
from service_runtime.settings import Settings
from tests.integration.read_side.workload import new_campaign


class Letters:
    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.sent.extend(letters)


def records(envelopes: Sequence[EventEnvelope]) -> list[EventRecord]:
    topic = Topics().for_aggregate("campaign")
    return [
        EventRecord(topic, 0, n, e.aggregate_id.encode(), encode_event(e), ())
        for n, e in enumerate(envelopes)
    ]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many packed writes (`readmodels.scripts.pipelined`, each a round trip: on a cluster
    one write per node, all at once) each batch sends; the claim's and the projection's."""
    trips: list[int] = []
    real = scripts.pipelined

    async def counted(redis: Any, commands: Any) -> list[Any]:
        trips.append(len(commands))
        return await real(redis, commands)

    monkeypatch.setattr(scripts, "pipelined", counted)
    monkeypatch.setattr(generations, "pipelined", counted)
    return trips


async def test_a_known_generation_is_claimed_with_the_reads_and_a_swap_is_followed(
    settings: Settings, redis: Redis, round_trips: list[int]
) -> None:
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    await mark_whole(redis, prefix)
    consumer = ProjectionConsumer(campaigns_projection(prefix, buckets), redis, Letters(), "g")
    first, second, third = new_campaign("u1"), new_campaign("u1"), new_campaign("u1")

    report = await consumer.handle(records(first.events))
    assert report.generation == "campaigns.1" and report.applied == 1
    round_trips.clear()
    second.then("CampaignActivated")
    report = await consumer.handle(records(second.events))
    assert report.generation == "campaigns.1" and report.applied == 2
    # The reads with the claim, then the guarded write: two round trips, not three.
    assert len(round_trips) == 2

    await swap_generation(redis, prefix, "campaigns", "campaigns.2")
    report = await consumer.handle(records(third.events))
    assert report.generation == "campaigns.2" and report.applied == 1
    old = CampaignKeys(generation_base(prefix, "campaigns.1"), buckets)
    new = CampaignKeys(generation_base(prefix, "campaigns.2"), buckets)
    assert await redis.exists(old.campaign(third.aggregate_id)) == 0
    assert await redis.hget(new.campaign(third.aggregate_id), "v") == b"1"


async def test_a_lost_sentinel_stops_the_batch_before_anything_is_written(
    settings: Settings, redis: Redis
) -> None:
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    await mark_whole(redis, prefix)
    for projection in (campaigns_projection(prefix, buckets), stats_projection(prefix, buckets)):
        consumer = ProjectionConsumer(projection, redis, Letters(), "g")
        await consumer.handle(records(new_campaign("u1").events))  # the generation is known
        await redis.delete(sentinel_key(prefix))
        lost = new_campaign("u1")
        with pytest.raises(ReadModelsLost):
            await consumer.handle(records(lost.events))
        generation = f"{projection.name}.1"
        state = aggregate_state(prefix, generation, projection.name, "campaign", lost.aggregate_id, buckets)
        if state.field is None:
            assert await redis.exists(state.key) == 0
        else:  # the stats state is a field of its bucket's hash (stats key layout 2)
            assert await redis.hexists(state.key, state.field) == 0
        await mark_whole(redis, prefix)
