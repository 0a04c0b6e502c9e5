"""The query API's in-process campaign cache over real Redis: never the reason a read is stale.

Entries here live 60 s, so anything fresher than that was the invalidation's doing, not expiry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from projectors.adapters.campaigns_projection import CampaignsProjection
from projectors.adapters.redis_projection import campaigns_projection
from query_api.adapters.campaign_cache import CampaignCache
from query_api.adapters.notifications import NotificationListener, VersionWaiters
from query_api.adapters.read_models import GenerationCache, ReadModels
from query_api.entrypoints.http.app import SERVICE
from readmodels.generations import mark_whole, swap_generation
from readmodels.keyspace import sentinel_key
from service_runtime.http import RequestMetrics
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import QueryClient, query_app, wait_until
from tests.integration.read_side.workload import Aggregate, campaign_payload, new_campaign

LONG_LIVED = {"campaign_cache_seconds": 60.0}


@pytest.fixture
async def cached_query(settings: Settings) -> AsyncIterator[QueryClient]:
    async with query_app(settings.model_copy(update=LONG_LIVED)) as client:
        yield client


def cache_of(query: QueryClient) -> CampaignCache:
    cache = query.read_side.read_models.cache
    assert isinstance(cache, CampaignCache)
    return cache


async def test_a_cached_campaign_shows_its_next_version_once_the_projector_announces_it(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    campaign, projection, path, alice = await _alices_campaign_cached(settings, redis, query)

    await projection.apply(redis, "campaigns.1", [campaign.then("CampaignActivated")])

    await wait_until(lambda: _version_is(query, path, alice, 2), 2, "the announced version")
    assert (await query.http.get(path, headers=alice)).json()["status"] == "active"


async def test_min_version_right_after_a_write_answers_the_new_version_not_the_cached_one(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    campaign, projection, path, alice = await _alices_campaign_cached(settings, redis, query)

    await projection.apply(redis, "campaigns.1", [campaign.then("CampaignPaused")])
    response = await query.http.get(path, params={"min_version": 2}, headers=alice)

    assert response.status_code == 200
    assert (response.json()["version"], response.headers["etag"]) == (2, '"2"')


async def test_a_cached_campaign_is_still_hidden_from_other_users(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    campaign = new_campaign("alice")
    await campaigns_projection(settings.redis_prefix, settings.read_model_buckets).apply(
        redis, "campaigns.1", campaign.events
    )
    path = f"/campaigns/{campaign.aggregate_id}"
    await wait_until(lambda: _cached(query, path, query.token("alice"), 1), 5, "the campaign to be cached")

    mallory = await query.http.get(path, headers=query.token("mallory"))
    assert mallory.status_code == 404
    assert (await query.http.get(path)).status_code == 401
    assert (await query.http.get(path, headers=query.admin())).json()["owner_id"] == "alice"


async def test_a_read_from_the_cache_answers_as_one_from_redis_headers_and_metrics_alike(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    campaign, projection, path, alice = await _alices_campaign_cached(settings, redis, query)
    cache_of(query).clear()
    before = _requests_counted(200)

    from_redis = await query.http.get(path, headers={**alice, "X-Correlation-ID": "from-redis"})
    assert len(cache_of(query)) == 1
    # A change the cache cannot know of: a read that still shows version 1 came from memory.
    await projection.apply(redis, "campaigns.1", [campaign.then("CampaignActivated")], announce=False)
    from_memory = await query.http.get(path, headers={**alice, "X-Correlation-ID": "from-memory"})

    assert (from_memory.status_code, from_memory.content) == (from_redis.status_code, from_redis.content)
    assert from_memory.json()["version"] == 1
    mine = ("x-correlation-id", "date")
    assert {k: v for k, v in from_memory.headers.items() if k not in mine} == {
        k: v for k, v in from_redis.headers.items() if k not in mine
    }
    assert from_memory.headers["cache-control"] == "no-store"
    assert from_memory.headers["x-content-type-options"] == "nosniff"
    assert from_memory.headers["x-correlation-id"] == "from-memory"
    assert _requests_counted(200) == before + 2


def _requests_counted(status: int) -> float:
    RequestMetrics.flush_all()
    labels = {"service": SERVICE, "method": "GET", "route": "/campaigns/{campaign_id}", "status": str(status)}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_a_cached_campaign_is_a_503_once_the_read_models_are_lost(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    generations = query.read_side.read_models.generations
    await mark_whole(redis, settings.redis_prefix)
    await generations.check_whole()
    _, _, path, alice = await _alices_campaign_cached(settings, redis, query)

    await redis.delete(sentinel_key(settings.redis_prefix))  # what a flush or a new server leaves
    await generations.check_whole()

    assert len(cache_of(query)) == 1  # still held: the read must not be answered from it
    for params in ({}, {"min_version": 1}):
        lost = await query.http.get(path, params=params, headers=alice)
        assert lost.status_code == 503, (params, lost.status_code, lost.text)
        assert lost.headers["content-type"] == "application/problem+json"


async def test_a_generation_swap_is_followed_although_the_old_generation_was_cached(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    campaign = new_campaign("alice", name="Live name")
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    await projection.apply(redis, "campaigns.1", campaign.events)
    rebuilt = new_campaign("alice")
    rebuilt.aggregate_id = campaign.aggregate_id
    rebuilt.events.clear()
    rebuilt.then("CampaignCreated", campaign_payload("alice", name="Rebuilt name"))
    await projection.apply(redis, "campaigns.2", rebuilt.events, announce=False)
    path, alice = f"/campaigns/{campaign.aggregate_id}", query.token("alice")
    await wait_until(lambda: _cached(query, path, alice, 1), 5, "the campaign to be cached")
    assert (await query.http.get(path, headers=alice)).json()["name"] == "Live name"

    await swap_generation(redis, settings.redis_prefix, "campaigns", "campaigns.2")

    async def swapped() -> bool:
        return (await query.http.get(path, headers=alice)).json()["name"] == "Rebuilt name"

    await wait_until(swapped, 0.5, "the swap announcement")


async def test_the_generation_cache_hands_a_swap_to_the_campaign_cache_when_it_learns_it(
    settings: Settings, redis: Redis
) -> None:
    seen: list[str] = []
    generations = GenerationCache(redis, settings.redis_prefix, seen.append)
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    await projection.apply(redis, "campaigns.1", new_campaign("alice").events)
    await generations.refresh()
    already = list(seen)  # the first refresh names the live generation (or it was the initial one)
    await generations.refresh()
    assert seen == already  # the same pointer: nothing to hand over
    await projection.apply(redis, "campaigns.2", new_campaign("alice").events, announce=False)
    await swap_generation(redis, settings.redis_prefix, "campaigns", "campaigns.2")
    await generations.refresh()
    assert seen == [*already, generations.base("campaigns")]
    assert generations.base("campaigns").endswith("campaigns.2")


async def test_a_lost_events_feed_leaves_no_stale_entry_behind(settings: Settings, redis: Redis) -> None:
    # The listener's own client carries a name, so the test can cut exactly its connection.
    name = f"{settings.redis_prefix}-listener"
    own = connect_redis(settings, client_name=name)
    generations = GenerationCache(own, settings.redis_prefix)
    cache = CampaignCache(1 << 20, ttl_seconds=60)
    listener = NotificationListener(
        own, settings.redis_prefix, VersionWaiters(), generations.refresh, cache, settings.read_model_buckets
    )
    models = ReadModels(own, generations, None, cache, settings.read_model_buckets)
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    campaign = new_campaign("alice")
    await projection.apply(redis, "campaigns.1", campaign.events)
    await generations.start()
    await listener.start()
    try:
        assert (await models.campaign(campaign.aggregate_id)).version == 1
        assert len(cache) == 1

        subscribed = await subscribers_named(redis, name)
        assert len(subscribed) == 1
        server, client = subscribed[0]
        await server.client_kill_filter(_id=client["id"])
        # A change whose announcement the listener cannot have seen.
        await projection.apply(redis, "campaigns.1", [campaign.then("CampaignActivated")], announce=False)

        async def current() -> bool:
            return (await models.campaign(campaign.aggregate_id)).version == 2

        await wait_until(current, 5, "the read to reach Redis again")

        # Resubscribed: entries are kept again, and announcements drop them again.
        async def cached_again() -> bool:
            await models.campaign(campaign.aggregate_id)
            return len(cache) == 1

        await wait_until(cached_again, 5, "the feed to come back")
        await projection.apply(redis, "campaigns.1", [campaign.then("CampaignPaused")])
        await wait_until(
            lambda: _model_version_is(models, campaign.aggregate_id, 3), 2, "the announced version"
        )
    finally:
        await listener.stop()
        await generations.stop()
        await own.aclose()


async def subscribers_named(redis: Redis, name: str) -> list[tuple[Redis, dict[str, str]]]:
    """The pub/sub connections named `name`, with a client of the server each is on (on a cluster
    the subscription sits on one node: every node is asked)."""
    servers = [redis]
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        servers = [Redis(host=node.host, port=node.port) for node in redis.get_nodes()]
    return [
        (server, client)
        for server in servers
        for client in await server.client_list()
        if client["name"] == name and int(client["sub"]) > 0
    ]


async def _alices_campaign_cached(
    settings: Settings, redis: Redis, query: QueryClient
) -> tuple[Aggregate, CampaignsProjection, str, dict[str, str]]:
    """A new campaign of alice's, projected and then read until the query API's cache keeps it:
    the campaign, the projection, its path and alice's headers."""
    campaign = new_campaign("alice")
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    await projection.apply(redis, "campaigns.1", campaign.events)
    path, alice = f"/campaigns/{campaign.aggregate_id}", query.token("alice")
    await wait_until(lambda: _cached(query, path, alice, 1), 5, "the campaign to be cached")
    return campaign, projection, path, alice


async def _version_is(query: QueryClient, path: str, headers: dict[str, str], version: int) -> bool:
    response = await query.http.get(path, headers=headers)
    return response.status_code == 200 and response.json()["version"] == version


async def _cached(query: QueryClient, path: str, headers: dict[str, str], version: int) -> bool:
    """Read; true once the read found `version` and the cache kept it (a late announcement of
    the version's own event may drop the first entries)."""
    return await _version_is(query, path, headers, version) and len(cache_of(query)) == 1


async def _model_version_is(models: ReadModels, campaign_id: str, version: int) -> bool:
    return (await models.campaign(campaign_id)).version == version


async def test_a_cached_page_shows_a_new_campaign_once_the_projector_announces_one(
    settings: Settings, redis: Redis, cached_query: QueryClient
) -> None:
    query = cached_query
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    first, unannounced, announced = new_campaign("alice"), new_campaign("alice"), new_campaign("alice")
    await projection.apply(redis, "campaigns.1", first.events)
    alice = query.token("alice")

    async def listed() -> list[str]:
        response = await query.http.get("/campaigns", params={"limit": 10}, headers=alice)
        assert response.status_code == 200
        return [item["id"] for item in response.json()["items"]]

    async def page_cached() -> bool:
        return await listed() == [first.aggregate_id] and cache_of(query).pages == 1

    await wait_until(page_cached, 5, "the page to be cached")
    # Written without an announcement: the cached page is what answers (nothing else would hide it).
    await projection.apply(redis, "campaigns.1", unannounced.events, announce=False)
    assert await listed() == [first.aggregate_id]
    # Another user's question is another page, never this one.
    response = await query.http.get("/campaigns", params={"limit": 10}, headers=query.token("mallory"))
    assert response.json() == {"items": [], "next_cursor": None}
    admin = await query.http.get("/campaigns", params={"limit": 10}, headers=query.admin())
    assert {item["id"] for item in admin.json()["items"]} == {first.aggregate_id, unannounced.aggregate_id}

    await projection.apply(redis, "campaigns.1", announced.events)

    async def all_three() -> bool:
        return set(await listed()) == {first.aggregate_id, unannounced.aggregate_id, announced.aggregate_id}

    await wait_until(all_three, 2, "the announcement to drop the page")
