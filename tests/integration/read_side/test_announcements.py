"""Announcements on every bucket's shard channel, read through the query API's listener.

The projection scripts SPUBLISH each applied event on its aggregate's bucket's channel (on a
Redis Cluster: in the slot of the bucket's keys, so only that shard carries it). The listener
SSUBSCRIBEs every bucket's channel, one connection per node owning some, and after a lost
connection subscribes again. Runs on standalone Redis and, under `make test-redis-cluster`, on
the Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from projectors.adapters.redis_projection import campaigns_projection, users_projection
from query_api.adapters.notifications import NotificationListener, VersionWaiters
from readmodels.keyspace import announcement_channel_of, announcement_channels, bucket_of
from service_runtime.redis_client import connect_redis
from service_runtime.redis_pubsub import Message, Subscription
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import wait_until
from tests.integration.read_side.workload import Aggregate
from tests.support.factories import campaign_payload

WITHIN = 10.0


def ids_per_bucket(buckets: int) -> list[str]:
    """One fresh aggregate id in each bucket, in bucket order."""
    found: dict[int, str] = {}
    while len(found) < buckets:
        candidate = uuid.uuid4().hex
        found.setdefault(bucket_of(candidate, buckets), candidate)
    return [found[bucket] for bucket in range(buckets)]


def campaigns_and_users_in_every_bucket(buckets: int) -> tuple[list[Aggregate], list[Aggregate]]:
    campaigns, users = [], []
    for aggregate_id in ids_per_bucket(buckets):
        campaign = Aggregate("campaign", aggregate_id)
        campaign.then("CampaignCreated", campaign_payload("owner-1"), actor="owner-1")
        campaigns.append(campaign)
    for aggregate_id in ids_per_bucket(buckets):
        user = Aggregate("user", aggregate_id)
        user.then("UserRegistered", {"email": f"{aggregate_id}@example.com", "name": "U", "roles": ["user"]})
        users.append(user)
    return campaigns, users


async def no_swap() -> None:
    return None


@contextlib.asynccontextmanager
async def listening(settings: Settings, redis: Redis) -> AsyncIterator[list[Message]]:
    """A raw subscription to every bucket's channel, collecting what it receives."""
    subscription = Subscription(
        redis, shard_channels=announcement_channels(settings.redis_prefix, settings.read_model_buckets)
    )
    await subscription.open()
    received: list[Message] = []
    reading = asyncio.create_task(subscription.run(received.append))
    try:
        yield received
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await subscription.aclose()


async def primaries_owning(redis: Redis, channels: list[str]) -> int:
    if not isinstance(redis, RedisCluster):
        return 1
    await redis.initialize()
    owners = {redis.get_node_from_key(channel) for channel in channels}
    return len({owner.name for owner in owners if owner is not None})


async def test_an_event_applied_in_every_bucket_is_announced_on_its_channel_and_wakes_its_waiter(
    settings: Settings, redis: Redis
) -> None:
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    campaigns, users = campaigns_and_users_in_every_bucket(buckets)
    channels = announcement_channels(prefix, buckets)
    assert len(set(channels)) == buckets

    subscription = Subscription(redis, shard_channels=channels)
    await subscription.open()
    # One connection per node owning some bucket (the cluster: each primary), never one per bucket.
    assert subscription.connections == await primaries_owning(redis, channels)
    await subscription.aclose()

    waiters = VersionWaiters()
    listener = NotificationListener(redis, prefix, waiters, no_swap, None, buckets)
    await listener.start()
    try:
        async with listening(settings, redis) as received:
            with contextlib.ExitStack() as stack:
                woken = [stack.enter_context(waiters.watch(a.aggregate_id, 1)) for a in [*campaigns, *users]]
                # campaigns: lua/cas.lua (several campaigns a call); users: lua/guard.lua
                await campaigns_projection(prefix, buckets).apply(
                    redis, "campaigns.1", [c.events[0] for c in campaigns]
                )
                await users_projection(prefix, buckets).apply(redis, "users.1", [u.events[0] for u in users])
                await asyncio.wait_for(asyncio.gather(*woken), WITHIN)

            async def all_received() -> bool:
                return len(received) >= 2 * buckets

            await wait_until(all_received, WITHIN, "every announcement")
            await asyncio.sleep(0.2)  # nothing more comes
    finally:
        await listener.stop()

    # Exactly one message per applied event, on the channel of the aggregate's own bucket.
    announced = sorted(
        (message["channel"].decode(), orjson.loads(message["data"])["aggregate_id"]) for message in received
    )
    expected = sorted(
        (announcement_channel_of(prefix, a.aggregate_id, buckets), a.aggregate_id)
        for a in [*campaigns, *users]
    )
    assert announced == expected
    assert {message["type"] for message in received} == {"smessage"}


@contextlib.asynccontextmanager
async def servers_of(redis: Redis) -> AsyncIterator[list[Redis]]:
    """A client of each node (the one client on standalone Redis)."""
    if not isinstance(redis, RedisCluster):
        yield [redis]
        return
    await redis.initialize()
    servers = [Redis(host=node.host, port=int(node.port)) for node in redis.get_nodes()]
    try:
        yield servers
    finally:
        for server in servers:
            await server.aclose()


async def pubsub_clients(servers: list[Redis], name: str) -> list[tuple[Redis, dict[str, str]]]:
    """The connections named `name` holding a subscription (classic or shard), with their node."""
    return [
        (server, client)
        for server in servers
        for client in await server.client_list()
        if client["name"] == name and (int(client["sub"]) or int(client.get("ssub", 0)))
    ]


def connection_of(server: Redis, client: dict[str, str]) -> tuple[str, str]:
    """(node, client id): a client id is a counter of its node's own, so another node can hand out
    the same one (on a freshly formed cluster, whose nodes have all seen about as many
    connections, it is likely): only the pair names one connection."""
    kwargs = server.connection_pool.connection_kwargs
    return f"{kwargs['host']}:{kwargs['port']}", client["id"]


@pytest.fixture
async def named(settings: Settings) -> AsyncIterator[tuple[Redis, str]]:
    """A client whose connections carry a name, so a test can cut exactly the listener's."""
    name = f"{settings.redis_prefix}-listener"
    client = connect_redis(settings, client_name=name)
    yield client, name
    await client.aclose()


async def test_after_its_connection_is_killed_the_listener_subscribes_again_and_is_woken_again(
    settings: Settings, redis: Redis, named: tuple[Redis, str]
) -> None:
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    own, name = named
    campaigns, _ = campaigns_and_users_in_every_bucket(buckets)
    projection = campaigns_projection(prefix, buckets)
    await projection.apply(redis, "campaigns.1", [c.events[0] for c in campaigns])
    waiters = VersionWaiters()
    listener = NotificationListener(own, prefix, waiters, no_swap, None, buckets)
    # The connection cut is the one on the node of the last bucket.
    last = announcement_channel_of(prefix, campaigns[-1].aggregate_id, buckets)
    async with servers_of(redis) as servers:
        victim = next(s for s in servers if _on_node_of(redis, s, last))
        # Client ids are counted per node: have this node's run ahead of the others', then the
        # others' catch up, so that the listener's new connection there gets the id of the one
        # cut, as on a freshly formed cluster (its nodes have all seen about as many connections).
        await client_id_reaches(victim, await victim.client_id() + 20)
        await listener.start()
        try:
            before = await pubsub_clients(servers, name)
            expected = await primaries_owning(redis, announcement_channels(prefix, buckets))
            assert len(before) == expected
            server, client = next((s, c) for s, c in before if s is victim)
            killed = connection_of(server, client)
            for other, _ in before:
                if other is not victim:
                    await client_id_reaches(other, int(client["id"]) - 1)
            with waiters.watch(campaigns[0].aggregate_id, 99) as cut:
                await server.client_kill_filter(_id=client["id"])
                # Whatever was in flight may be lost: every waiter is woken to read again.
                await asyncio.wait_for(cut, WITHIN)

            seen: list[tuple[Redis, dict[str, str]]] = []

            async def subscribed_again() -> bool:
                seen[:] = await pubsub_clients(servers, name)
                return len(seen) == expected and killed not in {connection_of(s, c) for s, c in seen}

            try:
                await wait_until(subscribed_again, WITHIN, "the listener to subscribe again")
            except AssertionError as exc:  # which subscriptions were there: what to look at first
                held = [
                    {"node": connection_of(s, c)[0]}
                    | {k: c.get(k) for k in ("id", "addr", "laddr", "sub", "ssub", "age")}
                    for s, c in seen
                ]
                raise AssertionError(f"{exc}: {expected} wanted, {killed} killed, held {held}") from None
            await asyncio.sleep(0.2)  # past its wake-up of every waiter after subscribing again

            # Waiters registered now are woken only by the announcements themselves.
            with contextlib.ExitStack() as stack:
                woken = [stack.enter_context(waiters.watch(c.aggregate_id, 2)) for c in campaigns]
                await projection.apply(redis, "campaigns.1", [c.then("CampaignActivated") for c in campaigns])
                await asyncio.wait_for(asyncio.gather(*woken), WITHIN)
        finally:
            await listener.stop()


async def client_id_reaches(server: Redis, wanted: int, at_most: int = 200) -> None:
    """Connect to `server` until a connection gets client id `wanted` or more (ids only grow), or
    `at_most` connections were made (a node far behind: a long-lived cluster's)."""
    kwargs = server.connection_pool.connection_kwargs
    for _ in range(at_most):
        probe = Redis(host=kwargs["host"], port=kwargs["port"])
        try:
            got = await probe.client_id()
        finally:
            await probe.aclose()
        if got >= wanted:
            return


def _on_node_of(redis: Redis, server: Redis, channel: str) -> bool:
    if not isinstance(redis, RedisCluster):
        return True
    owner = redis.get_node_from_key(channel)
    kwargs = server.connection_pool.connection_kwargs
    return owner is not None and (owner.host, int(owner.port)) == (kwargs["host"], int(kwargs["port"]))
