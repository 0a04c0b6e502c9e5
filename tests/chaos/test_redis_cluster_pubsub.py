"""The query API's listener follows its shard channels when a bucket's slot moves and when a
primary fails over: it subscribes again on the new owner and announcements wake waiters again.

On a private 3+3 Redis Cluster of this test's own (never the shared 7000-7005 nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from projectors.adapters.redis_projection import campaigns_projection
from query_api.adapters.notifications import NotificationListener, VersionWaiters
from readmodels.keyspace import announcement_channel_of, announcement_channels
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.read_side.test_announcements import (
    campaigns_and_users_in_every_bucket,
    no_swap,
    primaries_owning,
)
from tests.integration.read_side.workload import Aggregate
from tests.support.private_redis_cluster import PrivateRedisCluster, private_redis_cluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos

WITHIN = 30.0


def node(port: int) -> SyncRedis:
    return SyncRedis(host="127.0.0.1", port=port, socket_timeout=10)


def owner_port(cluster: PrivateRedisCluster, slot: int) -> int:
    """The port of the primary owning `slot`, as the cluster says."""
    with node(cluster.primaries()[0]) as client:
        for entry in client.execute_command("CLUSTER", "SLOTS"):
            start, end, primary = entry[0], entry[1], entry[2]
            if start <= slot <= end:
                return int(primary[1])
    raise AssertionError(f"slot {slot} is not covered")


def move_slot(cluster: PrivateRedisCluster, slot: int, source: int, target: int) -> None:
    """What `redis-cli --cluster reshard` does for one slot: mark it, migrate its keys, assign it."""
    with node(source) as src, node(target) as dst:
        source_id = src.execute_command("CLUSTER", "MYID")
        target_id = dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 10000, "KEYS", *keys)
        for port in cluster.primaries():
            with node(port) as each:
                each.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def subscriptions_named(cluster: PrivateRedisCluster, name: str) -> set[tuple[int, int]]:
    """(port, client id) of the connections named `name` holding a subscription, on every node up."""
    found: set[tuple[int, int]] = set()
    for port in cluster.ports:
        if cluster.processes[port].poll() is not None:
            continue  # killed
        with node(port) as client:
            for entry in client.client_list():
                if entry["name"] == name and (int(entry["sub"]) or int(entry.get("ssub", 0))):
                    found.add((port, int(entry["id"])))
    return found


async def subscribed_anew(
    cluster: PrivateRedisCluster, name: str, before: set[tuple[int, int]], expected: int
) -> None:
    async def anew() -> bool:
        now = subscriptions_named(cluster, name)
        return len(now) == expected and not now & before

    await eventually(anew, WITHIN, 0.3, "the listener to subscribe again")
    await asyncio.sleep(0.3)  # past its wake-up of every waiter after subscribing again


async def applied(redis: Redis, prefix: str, buckets: int, campaigns: list[Aggregate], event: str) -> None:
    """The next event of every campaign, applied (retried while the cluster fails over)."""
    envelopes = [c.then(event) for c in campaigns]
    projection = campaigns_projection(prefix, buckets)

    async def written() -> bool:
        try:
            await projection.apply(redis, "campaigns.1", envelopes)
        except Exception as error:
            logging.getLogger(__name__).warning("not written yet: %r", error)
            return False
        return True

    await eventually(written, WITHIN, 0.5, f"{event} to be written")


@contextlib.asynccontextmanager
async def on_private_cluster(
    settings: Settings, root: Path
) -> AsyncIterator[tuple[PrivateRedisCluster, Settings]]:
    with private_redis_cluster(root) as cluster:
        yield cluster, settings.model_copy(update={"redis_cluster_nodes": ",".join(cluster.addresses)})


async def test_the_listener_follows_a_moved_slot_and_a_failover(settings: Settings, tmp_path: Path) -> None:
    async with on_private_cluster(settings, tmp_path / "redis") as (cluster, on_cluster):
        prefix, buckets = on_cluster.redis_prefix, on_cluster.read_model_buckets
        name = f"{prefix}-listener"
        redis = connect_redis(on_cluster)
        own = connect_redis(on_cluster, client_name=name)
        assert isinstance(redis, RedisCluster)
        campaigns, _ = campaigns_and_users_in_every_bucket(buckets)
        await campaigns_projection(prefix, buckets).apply(
            redis, "campaigns.1", [c.events[0] for c in campaigns]
        )
        waiters = VersionWaiters()
        listener = NotificationListener(own, prefix, waiters, no_swap, None, buckets)
        await listener.start()
        try:
            expected = await primaries_owning(redis, announcement_channels(prefix, buckets))
            assert expected == 3

            # 1. A bucket's slot moves to another primary: its old owner drops the channel.
            moving = campaigns[0]
            slot = key_slot(announcement_channel_of(prefix, moving.aggregate_id, buckets).encode())
            source = owner_port(cluster, slot)
            target = next(port for port in cluster.primaries() if port != source)
            before = subscriptions_named(cluster, name)
            assert len(before) == expected
            move_slot(cluster, slot, source, target)
            assert owner_port(cluster, slot) == target
            await subscribed_anew(cluster, name, before, expected)
            with contextlib.ExitStack() as stack:
                woken = [stack.enter_context(waiters.watch(c.aggregate_id, 2)) for c in campaigns]
                await applied(redis, prefix, buckets, campaigns, "CampaignActivated")
                await asyncio.wait_for(asyncio.gather(*woken), WITHIN)

            # 2. A primary is killed and its replica takes over its buckets.
            before = subscriptions_named(cluster, name)
            victim = owner_port(cluster, slot)
            cluster.kill(victim)
            await eventually(
                lambda: _failed_over(cluster, victim),
                WITHIN,
                0.5,
                "a replica to take over the killed primary",
            )
            await subscribed_anew(cluster, name, before, expected)
            with contextlib.ExitStack() as stack:
                woken = [stack.enter_context(waiters.watch(c.aggregate_id, 3)) for c in campaigns]
                await applied(redis, prefix, buckets, campaigns, "CampaignPaused")
                await asyncio.wait_for(asyncio.gather(*woken), WITHIN)
        finally:
            await listener.stop()
            await own.aclose()
            await redis.aclose()


def _failed_over(cluster: PrivateRedisCluster, victim: int) -> bool:
    alive = [port for port in cluster.ports if port != victim]
    try:
        with node(alive[0]) as client:
            info = client.execute_command("CLUSTER", "INFO")
    except Exception:
        return False
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and len([p for p in cluster.primaries() if p != victim]) == 3
