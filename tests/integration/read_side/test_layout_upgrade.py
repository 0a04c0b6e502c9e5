"""An upgrade across a key-layout change, on real Kafka, Redis and MongoDB: the campaigns read
model written in an earlier layout (1: a sorted index per status, channel and tag, no id
sets, no layout marker; 2: the lean indexes with text members `sortvalue\\0id` and text ids;
3: packed members and ids; every one of them with its documents as JSON, not compressed) is
rebuilt by the projectors at start into a new generation, swapped in, and the filtered lists
are right again, a cursor issued before the swap going on after it; no operator command.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from projectors.adapters.digest import generation_keys
from readmodels.campaigns import (
    SORT_KEYS,
    campaign_memberships,
    filter_memberships,
    member_campaign_id,
    set_member,
    unpacked_id,
)
from readmodels.generations import LAYOUT_VERSIONS, initial_generation, layout_version, live_generations
from readmodels.keyspace import CampaignKeys, StatsKeys, generation_base, layout_key
from readmodels.stored_documents import document_json
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import (
    EventProducer,
    QueryClient,
    query_app,
    record_in_log,
    running_projectors,
    wait_records,
    wait_until,
)
from tests.integration.read_side.workload import Aggregate, new_campaign
from tests.support.redis_keys import summed_hashes


def _campaigns() -> list[Aggregate]:
    campaigns = [new_campaign("owner-1", tags=["spring"] if n % 2 else ["autumn"]) for n in range(8)]
    for campaign in campaigns[:3]:
        campaign.then("CampaignActivated")
    return campaigns


async def _listed(query: QueryClient, **params: Any) -> set[str]:
    answer = await query.http.get("/campaigns", params=params, headers=query.token("owner-1"))
    assert answer.status_code == 200, answer.text
    return {item["id"] for item in answer.json()["items"]}


async def _as_an_earlier_layout(redis: Redis, settings: Settings, generation: str, layout: int) -> None:
    """What a deployment of an earlier layout holds: documents as their JSON; before layout 3
    text members (`sortvalue\\0id`) in the sort indexes; in layout 2 text ids in the id sets and
    its marker; in layout 1 no marker, no id sets, a sorted index per status, channel and tag
    instead (members as the sort indexes')."""
    keys = CampaignKeys(generation_base(settings.redis_prefix, generation), settings.read_model_buckets)
    if layout == 1:
        await redis.delete(layout_key(settings.redis_prefix, generation))
    else:
        await redis.set(layout_key(settings.redis_prefix, generation), layout)
    for bucket in range(settings.read_model_buckets):
        for member in await redis.zrange(keys.index("created", bucket=bucket), 0, -1):
            campaign_id = member_campaign_id(member, packed=True)
            stored = await redis.hget(keys.campaign(campaign_id), "doc")
            assert stored is not None and not stored.startswith(b"{")
            doc = document_json(stored)
            await redis.hset(keys.campaign(campaign_id), "doc", doc)
            if layout == 3:
                continue
            state = orjson.loads(doc)
            packed, text = campaign_memberships(state), campaign_memberships(state, packed=False)
            for sort in SORT_KEYS:
                for where in packed[sort][1]:
                    index = keys.filtered_index(sort, where, bucket)
                    assert await redis.zrem(index, packed[sort][0]) == 1
                    await redis.zadd(index, {text[sort][0]: 0})
            for dimension, value in filter_memberships(state):
                in_set = keys.filter_set(dimension, value, bucket)
                if layout == 1:
                    await redis.delete(in_set)
                    for sort in SORT_KEYS:
                        await redis.zadd(keys.index(sort, dimension, value, bucket), {text[sort][0]: 0})
                else:
                    assert await redis.srem(in_set, set_member(campaign_id, packed=True)) == 1
                    await redis.sadd(in_set, campaign_id)


@pytest.mark.parametrize("earlier", [1, 2, 3])
async def test_a_read_model_of_an_earlier_layout_is_rebuilt_at_start_and_lists_are_right_again(
    settings: Settings, redis: Redis, producer: EventProducer, earlier: int
) -> None:
    campaigns = _campaigns()
    events = [e for c in campaigns for e in c.events]
    await record_in_log(settings, events)
    active = {c.aggregate_id for c in campaigns[:3]}
    spring = {c.aggregate_id for n, c in enumerate(campaigns) if n % 2}
    fast = settings.model_copy(
        update={"layout_check_seconds": 0.5, "layout_rebuild_grace_seconds": 0, "campaign_cache_bytes": 0}
    )
    prefix = settings.redis_prefix

    # A fresh start writes this code's layout: nothing to rebuild.
    async with running_projectors(fast):
        await producer.publish(events)
        await wait_records(redis, settings, "campaigns", len(events))
    first = initial_generation("campaigns")
    assert (await live_generations(redis, prefix))["campaigns"] == first
    assert await layout_version(redis, prefix, first) == LAYOUT_VERSIONS["campaigns"] == 4

    await _as_an_earlier_layout(redis, settings, first, earlier)
    async with query_app(fast) as query:
        # Until the rebuild swaps it out, the query API reads the earlier layout as it was written.
        assert query.read_side.read_models.generations.campaigns_layout == earlier
        one = campaigns[0].aggregate_id
        by_id = await query.http.get(f"/campaigns/{one}", headers=query.token("owner-1"))
        assert by_id.status_code == 200 and by_id.json()["id"] == one, by_id.text
        assert await _listed(query, status="active") == active
        assert await _listed(query, tag="spring", status="active") == spring & active
        assert len(await _listed(query)) == len(campaigns)
        first_page = await query.http.get(
            "/campaigns", params={"sort": "name", "limit": 3}, headers=query.token("owner-1")
        )
        assert first_page.status_code == 200, first_page.text
        cursor = first_page.json()["next_cursor"]
        seen_before = [item["id"] for item in first_page.json()["items"]]

        async with running_projectors(fast):

            async def rebuilt() -> bool:
                return (await live_generations(redis, prefix))["campaigns"] != first

            await wait_until(rebuilt, 60, "the campaigns read model rebuilt into a new generation")
            second = (await live_generations(redis, prefix))["campaigns"]
            assert await layout_version(redis, prefix, second) == 4
            rebuilt_keys = CampaignKeys(generation_base(prefix, second), settings.read_model_buckets)
            in_sets = in_old_indexes = 0
            for bucket in range(settings.read_model_buckets):
                in_sets += await redis.scard(rebuilt_keys.filter_set("status", "active", bucket))
                in_old_indexes += await redis.exists(
                    rebuilt_keys.index("created", "status", "active", bucket)
                )
            assert (in_sets, in_old_indexes) == (len(active), 0)
            stored = await redis.hget(rebuilt_keys.campaign(one), "doc")
            assert stored is not None and orjson.loads(document_json(stored))["id"] == one
            assert not stored.startswith(b"{")  # compressed in the new generation
            # Users did not change layout: not rebuilt.
            assert (await live_generations(redis, prefix))["users"] == initial_generation("users")

            async def lists_right() -> bool:
                return await _listed(query, status="active") == active

            async def reads_the_new_layout() -> bool:
                return query.read_side.read_models.generations.campaigns_layout == 4

            await wait_until(reads_the_new_layout, 20, "the query API reading the rebuilt generation")
            assert await lists_right()
            # The cursor issued on the earlier layout goes on where it stopped, on the new one.
            rest = await query.http.get(
                "/campaigns",
                params={"sort": "name", "limit": 100, "cursor": cursor},
                headers=query.token("owner-1"),
            )
            assert rest.status_code == 200, rest.text
            seen_after = [item["id"] for item in rest.json()["items"]]
            assert len(seen_before + seen_after) == len(set(seen_before + seen_after)) == len(campaigns)
            assert await _listed(query, tag="spring") == spring
            assert await _listed(query, tag="spring", status="active") == spring & active
            assert len(await _listed(query)) == len(campaigns)
            # The replaced generation is removed after the swap, with its marker.

            async def replaced_gone() -> bool:
                return not await redis.exists(layout_key(prefix, first))

            await wait_until(replaced_gone, 20, "the replaced generation's layout marker removed")

            # Live traffic goes into the new generation, in the new layout.
            later = campaigns[3].then("CampaignActivated")
            await record_in_log(settings, [later])
            await producer.publish([later])
            active.add(campaigns[3].aggregate_id)
            await wait_until(lists_right, 20, "a later activation listed")


# The fields of a campaign's stats state in key layout 2, after its version (lua/stats.lua).
_STATS_STATE_FIELDS = ("status", "channel", "currency", "units", "frac", "deleted")


async def _stats_as_layout1(redis: Redis, settings: Settings, generation: str) -> None:
    """What a deployment of stats key layout 1 holds: a hash a campaign and a user (its fields and
    `v`), no hashes of states, its marker 1."""
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    keys = StatsKeys(generation_base(prefix, generation), buckets)
    await redis.set(layout_key(prefix, generation), 1)
    for bucket in range(buckets):
        for states, layout1 in (
            (keys.campaign_states(bucket), keys.layout1_campaign),
            (keys.user_states(bucket), keys.layout1_user),
        ):
            for field, value in (await redis.hgetall(states)).items():
                version, *parts = value.decode().split("|")
                mapping = {"v": version} | {
                    n: p for n, p in zip(_STATS_STATE_FIELDS, parts, strict=False) if p
                }
                await redis.hset(layout1(unpacked_id(field)), mapping=mapping)  # type: ignore[arg-type]
            await redis.delete(states)


async def _stats_counts(redis: Redis, settings: Settings, generation: str) -> dict[str, int]:
    keys = StatsKeys(generation_base(settings.redis_prefix, generation), settings.read_model_buckets)
    return await summed_hashes(redis, [keys.counts(b) for b in range(keys.buckets)])


async def test_a_stats_read_model_of_layout_1_is_rebuilt_at_start_with_the_same_counts(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    campaigns = _campaigns()
    events = [e for c in campaigns for e in c.events]
    await record_in_log(settings, events)
    fast = settings.model_copy(update={"layout_check_seconds": 0.5, "layout_rebuild_grace_seconds": 0})
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    async with running_projectors(fast):
        await producer.publish(events)
        await wait_records(redis, settings, "stats", len(events))
    first = initial_generation("stats")
    assert await layout_version(redis, prefix, first) == LAYOUT_VERSIONS["stats"] == 2
    counts = await _stats_counts(redis, settings, first)
    assert (counts["campaigns.total"], counts["status:active"]) == (len(campaigns), 3)

    await _stats_as_layout1(redis, settings, first)
    assert await _stats_counts(redis, settings, first) == counts
    async with query_app(fast) as query:
        answered = (await query.http.get("/stats", headers=query.admin())).json()
        assert answered["campaigns"]["by_status"]["active"] == 3
        async with running_projectors(fast):

            async def rebuilt() -> bool:
                return (await live_generations(redis, prefix))["stats"] != first

            await wait_until(rebuilt, 60, "the stats read model rebuilt into a new generation")
            second = (await live_generations(redis, prefix))["stats"]
            assert await layout_version(redis, prefix, second) == 2
            assert await _stats_counts(redis, settings, second) == counts
            keys = StatsKeys(generation_base(prefix, second), buckets)
            held = sum([await redis.hlen(keys.campaign_states(b)) for b in range(buckets)])
            assert held == len(campaigns)
            assert not [k for k in await generation_keys(redis, prefix, second) if b":campaign:" in k]
            # The campaigns read model kept its layout: not rebuilt.
            assert (await live_generations(redis, prefix))["campaigns"] == initial_generation("campaigns")

            # Live traffic is counted in the new generation, in the new layout.
            later = campaigns[3].then("CampaignActivated")
            await record_in_log(settings, [later])
            await producer.publish([later])

            async def counted() -> bool:
                answer = await query.http.get("/stats", headers=query.admin())
                return answer.json()["campaigns"]["by_status"].get("active") == 4

            await wait_until(counted, 20, "a later activation counted")
            answer = (await query.http.get("/stats", headers=query.admin())).json()
            assert answer["campaigns"]["total"] == answered["campaigns"]["total"]
            assert answer["budget_by_currency"] == answered["budget_by_currency"]
