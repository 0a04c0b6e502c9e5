"""The stats projection's batched apply (one lua/stats_batch.lua call per bucket per batch) against
real Redis, beside one event a call (lua/stats.lua under lua/guard.lua, what every stats event went
through before and what a refused call still goes through): the same outcomes, counters, states
and parked events after every batch, whatever the batch's split, order or redelivery; the
counters of the events' fold; refusals failing only their own events; budgets summed exactly."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from events import EventEnvelope
from projectors.adapters import stats_projection as batched
from projectors.adapters.digest import generation_digest, generation_key_digests
from projectors.adapters.redis_projection import stats_projection
from projectors.domain.outcomes import ApplyResult, Outcome
from readmodels.campaigns import fold_campaign
from readmodels.keyspace import StatsKeys, bucket_of, generation_base, parked_key, parked_set_key_of
from readmodels.parked import unpack_sequence
from readmodels.scripts import LuaScript
from readmodels.stats import join_amount, minute_bucket
from service_runtime.settings import Settings
from tests.integration.read_side.workload import Aggregate, interleave, mixed_workload, new_campaign, new_user
from tests.support.factories import campaign_payload
from tests.support.redis_keys import summed_hashes

BATCHED, ONE_BY_ONE = "stats.1", "stats.2"


def expected_counters(aggregates: Sequence[Aggregate]) -> dict[str, dict[str, int]]:
    """What the counters must hold once every event of `aggregates` is applied, from their fold."""
    counts: Counter[str] = Counter()
    budget: Counter[str] = Counter()
    minutes: Counter[str] = Counter()
    for aggregate in aggregates:
        for envelope in aggregate.events:
            minutes[minute_bucket(envelope)] += 1
        if aggregate.kind == "user":
            counts["users.total"] += 1
            continue
        state = fold_campaign(aggregate.events) or {}
        if state["status"] == "deleted":
            counts["campaigns.deleted"] += 1
            continue
        counts["campaigns.total"] += 1
        counts[f"status:{state['status']}"] += 1
        counts[f"channel:{state['channel']}"] += 1
        amount = Decimal(state["budget"]["amount"])
        currency = state["budget"]["currency"]
        budget[f"{currency}:units"] += int(amount)
        budget[f"{currency}:frac"] += int((amount - int(amount)) * 10_000)
    return {
        name: {k: v for k, v in c.items() if v}
        for name, c in (("counts", counts), ("budget", budget), ("minutes", minutes))
    }


async def read_counters(
    redis: Redis, prefix: str, buckets: int, generation: str
) -> dict[str, dict[str, int]]:
    keys = StatsKeys(generation_base(prefix, generation), buckets)

    async def summed(name: str) -> dict[str, int]:
        key_of = getattr(keys, name)
        return {
            k: v for k, v in (await summed_hashes(redis, [key_of(b) for b in range(buckets)])).items() if v
        }

    return {
        "counts": await summed("counts"),
        "budget": await summed("budget"),
        "minutes": await summed("events_per_minute"),
    }


async def held(redis: Redis, prefix: str, generation: str) -> dict[bytes, object]:
    """Every key of the generation's content, by key relative to its base; a parked hash by its
    versions and changes alone (an entry also holds when it was parked, which differs by run)."""
    contents: dict[bytes, object] = dict(await generation_key_digests(redis, prefix, generation))
    base = generation_base(prefix, generation)
    for key in list(contents):
        if b"parked:" in key:
            entries = await redis.hgetall(f"{base}:".encode() + key)
            contents[key] = {version: _without_time(entry) for version, entry in entries.items()}
    return contents


def _without_time(entry: bytes) -> list[object]:
    notice, change, _parked_at = unpack_sequence(entry)
    return [notice, change]


def outcomes(result: ApplyResult) -> list[tuple[Outcome, int, bool]]:
    return [(o.outcome, o.drained, o.error is None) for o in result.outcomes]


def workload() -> list[Aggregate]:
    users = [new_user() for _ in range(6)]
    users[0].then("UserLoggedIn")
    users[1].then("UserRolesChanged", {"roles": ["user", "admin"]})
    users[1].then("UserLoggedIn")
    return [*mixed_workload(40, ["u1", "u2", "u3"]), *users]


@pytest.mark.parametrize("per_call", [3, 256])
@pytest.mark.parametrize("buckets", [0, 8])
async def test_batches_leave_after_each_batch_what_one_event_a_call_leaves(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch, per_call: int, buckets: int
) -> None:
    """Each aggregate's events shuffled (parked, then drained when the gap fills, in the same call,
    a later call or a later batch), batches of 1-25 events each overlapping the one before (a
    redelivery: an event parked by a batch comes again with the version it waited for), some
    delivered twice, an event twice within a batch, calls of `per_call` events (3: an aggregate's
    events span several calls): the batched apply and one event a call answer the same outcome
    for every event and hold the same counters, states and parked events after every batch; at
    the end, those of the fold."""
    monkeypatch.setattr(batched, "EVENTS_PER_CALL", per_call)
    prefix, buckets = settings.redis_prefix, buckets or settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    aggregates = workload()
    shuffle = random.Random(16 + buckets + per_call)
    events = list(interleave(aggregates))
    shuffle.shuffle(events)
    seen: Counter[Outcome] = Counter()
    start = 0
    while start < len(events):
        size = shuffle.randint(1, 25)
        batch: list[EventEnvelope] = events[start : start + size]
        if len(batch) > 3:
            batch.insert(len(batch) // 2, batch[1])  # the same event twice in one batch
        for _ in range(2 if shuffle.random() < 0.3 else 1):  # sometimes the same batch again
            together = await projection.apply(redis, BATCHED, batch)
            alone = await projection.one_event_a_call.apply(redis, ONE_BY_ONE, batch)
            assert outcomes(together) == outcomes(alone)
            seen.update(o.outcome for o in together.outcomes)
            assert await held(redis, prefix, BATCHED) == await held(redis, prefix, ONE_BY_ONE)
        start += max(1, size - shuffle.randint(0, size // 2))  # the next batch repeats this one's end

    assert seen[Outcome.PARKED] > 0 and seen[Outcome.DUPLICATE] > 0, "the shuffle parks, redelivery repeats"
    assert await generation_digest(redis, prefix, BATCHED) == await generation_digest(
        redis, prefix, ONE_BY_ONE
    )
    assert await read_counters(redis, prefix, buckets, BATCHED) == expected_counters(aggregates)
    base = generation_base(prefix, BATCHED)
    for aggregate in aggregates:  # nothing left parked
        assert await redis.exists(parked_key(base, aggregate.kind, aggregate.aggregate_id, buckets)) == 0
        assert await redis.scard(parked_set_key_of(base, aggregate.aggregate_id, buckets)) == 0


async def test_an_event_parked_by_an_earlier_batch_and_delivered_again_with_the_missing_version_is_unparked(
    settings: Settings, redis: Redis
) -> None:
    """Version 3 parked by one batch (kept in Redis), then delivered again before version 2 in the
    next: the call parks it again, applies 2 and drains 3, and Redis keeps no entry of 3."""
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    campaign = new_campaign("u1", channel="sms")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    v1, v2, v3 = campaign.events
    base = generation_base(prefix, BATCHED)
    parked = parked_key(base, "campaign", campaign.aggregate_id, buckets)

    first = await projection.apply(redis, BATCHED, [v1, v3])
    assert [o.outcome for o in first.outcomes] == [Outcome.APPLIED, Outcome.PARKED]
    assert await redis.hkeys(parked) == [b"3"]
    again = await projection.apply(redis, BATCHED, [v3, v2])
    assert [(o.outcome, o.drained) for o in again.outcomes] == [(Outcome.PARKED, 0), (Outcome.APPLIED, 1)]

    assert await redis.exists(parked) == 0
    assert await redis.scard(parked_set_key_of(base, campaign.aggregate_id, buckets)) == 0
    assert await read_counters(redis, prefix, buckets, BATCHED) == expected_counters([campaign])


async def test_one_call_per_bucket_a_batch(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    buckets = max(settings.read_model_buckets, 8)
    projection = stats_projection(settings.redis_prefix, buckets)
    aggregates = workload()
    events = interleave(aggregates)
    sent: list[int] = []
    run_pipelined = LuaScript.run_pipelined

    async def counting(self: LuaScript, redis: Redis, calls: Sequence, before: Sequence = ()) -> list:
        sent.append(len(calls))
        return await run_pipelined(self, redis, calls, before)

    monkeypatch.setattr(LuaScript, "run_pipelined", counting)
    result = await projection.apply(redis, BATCHED, events)
    # One pipelined write, a call per bucket the batch touches (none past EVENTS_PER_CALL events).
    assert sent == [len({bucket_of(e.aggregate_id, buckets) for e in events})]
    assert [o.outcome for o in result.outcomes] == [Outcome.APPLIED] * len(events)
    assert await read_counters(redis, settings.redis_prefix, buckets, BATCHED) == expected_counters(
        aggregates
    )


async def test_a_field_moved_back_to_0_within_one_call_exists_as_after_one_event_a_call(
    settings: Settings, redis: Redis
) -> None:
    """Which counter fields exist must not depend on how the events were split into calls: the
    live generation (small batches) and a rebuilt one (large batches) must digest the same."""
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    campaign = new_campaign("u1", channel="sms", budget={"amount": "3.5", "currency": "JPY"})
    campaign.then("CampaignUpdated", {"channel": "push", "budget": {"amount": "4", "currency": "GBP"}})
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    await projection.apply(redis, BATCHED, campaign.events)
    await projection.one_event_a_call.apply(redis, ONE_BY_ONE, campaign.events)

    assert await read_counters(redis, prefix, buckets, BATCHED) == expected_counters([campaign])
    keys = StatsKeys(generation_base(prefix, BATCHED), buckets)
    bucket = bucket_of(campaign.aggregate_id, buckets)
    counts = await redis.hgetall(keys.counts(bucket))
    assert (counts[b"channel:sms"], counts[b"status:draft"], counts[b"status:active"]) == (b"0", b"0", b"0")
    assert (await redis.hgetall(keys.budget(bucket)))[b"JPY:units"] == b"0"
    assert await generation_digest(redis, prefix, BATCHED) == await generation_digest(
        redis, prefix, ONE_BY_ONE
    )


async def test_a_refused_event_fails_alone_and_the_rest_of_its_call_is_counted(
    settings: Settings, redis: Redis
) -> None:
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    good = mixed_workload(6, ["u1"])
    orphan = Aggregate("campaign")
    orphan.then("CampaignUpdated", {"name": "no creation"})
    orphan.then("CampaignActivated")
    events = interleave([*good, orphan])

    result = await projection.apply(redis, BATCHED, events)
    alone = await projection.one_event_a_call.apply(redis, ONE_BY_ONE, events)

    by_event = {e.event_id: o for e, o in zip(events, result.outcomes, strict=True)}
    refused = by_event[orphan.events[0].event_id]
    assert refused.outcome is Outcome.FAILED and "no creation event" in (refused.error or "")
    # Its successor waits behind it (never applied over the refusal); the rest are counted.
    assert by_event[orphan.events[1].event_id].outcome is Outcome.PARKED
    assert outcomes(result) == outcomes(alone)
    assert result.applied == sum(a.version for a in good)
    assert await read_counters(redis, prefix, buckets, BATCHED) == expected_counters(good)
    assert await held(redis, prefix, BATCHED) == await held(redis, prefix, ONE_BY_ONE)


async def test_a_call_refused_as_a_whole_fails_only_the_events_refused_one_a_call(
    settings: Settings, redis: Redis
) -> None:
    """A parked hash of another type makes Redis refuse the call that parks there: its events are
    sent again one a call, so the other aggregates of the bucket are counted once and only the
    broken one's event fails, and nothing of the refused call was counted before."""
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    good = mixed_workload(8, ["u1"])
    broken = new_campaign("u1")
    broken.then("CampaignActivated")
    base = generation_base(prefix, BATCHED)
    await redis.set(parked_key(base, "campaign", broken.aggregate_id, buckets), "not a hash")
    # Its version 2 without version 1: parked, where the key is not a hash.
    events = [*interleave(good), broken.events[1]]

    result = await projection.apply(redis, BATCHED, events)

    assert result.outcomes[-1].outcome is Outcome.FAILED
    assert "WRONGTYPE" in (result.outcomes[-1].error or "")
    # Applied once (not duplicates of writes the refused call had made), and counted once.
    assert [o.outcome for o in result.outcomes[:-1]] == [Outcome.APPLIED] * (len(events) - 1)
    assert await read_counters(redis, prefix, buckets, BATCHED) == expected_counters(good)


async def test_budgets_past_a_double_s_exact_range_are_summed_exactly(
    settings: Settings, redis: Redis
) -> None:
    """15-digit amounts: twelve in one call (one bucket) pass 2^53, where a double would round."""
    buckets = settings.read_model_buckets
    projection = stats_projection(settings.redis_prefix, buckets)
    amount = "999999999999999.9999"
    campaigns = []
    while len(campaigns) < 12:
        campaign = Aggregate("campaign", aggregate_id=str(uuid.uuid4()))
        if bucket_of(campaign.aggregate_id, buckets) == 0:
            budget = {"amount": amount, "currency": "EUR"}
            campaign.then("CampaignCreated", campaign_payload("u1", budget=budget), actor="u1")
            campaigns.append(campaign)
    campaigns[0].then("CampaignUpdated", {"budget": {"amount": "0.0001", "currency": "EUR"}})
    await projection.apply(redis, BATCHED, interleave(campaigns))

    keys = StatsKeys(generation_base(settings.redis_prefix, BATCHED), buckets)
    budget = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.budget(0))).items()}
    total = Decimal(amount) * 11 + Decimal("0.0001")
    assert Decimal(join_amount(budget["EUR:units"], budget["EUR:frac"])) == total
