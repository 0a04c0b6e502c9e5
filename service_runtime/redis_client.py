"""The one way a process connects to Redis: a Redis Cluster client when cluster nodes are set,
the plain client on `redis_url` otherwise.

Both are typed as `redis.asyncio.Redis`: redis-py's `RedisCluster` offers the same commands,
routes each by its key's slot, follows MOVED/ASK and refreshes its slot table after a failover,
so callers never branch on the topology. What differs is kept in the read-model contract
(`readmodels.keyspace` hash tags, `readmodels.scripts.pipelined`), not at call sites.

On a cluster, credentials and TLS come from `redis_url` (`rediss://user:password@any-host`):
its host is ignored, the seed nodes are `redis_cluster_nodes`.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url

from service_runtime.settings import Settings


def is_cluster(redis: object) -> bool:
    return isinstance(redis, RedisCluster)


def cluster_nodes(addresses: list[str]) -> list[ClusterNode]:
    nodes = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        nodes.append(ClusterNode(host.strip("[]") or "127.0.0.1", int(port)))
    return nodes


def connect_redis(settings: Settings, **options: Any) -> Redis:
    """A client of the Redis the settings name (nothing is connected until first used)."""
    addresses = settings.redis_cluster_addresses
    if not addresses:
        return Redis.from_url(settings.redis_url, **options)
    url = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    for name in ("username", "password"):
        if url.get(name) and name not in options:
            options[name] = url[name]
    if settings.redis_url.startswith("rediss://"):
        options.setdefault("ssl", True)
    cluster = RedisCluster(startup_nodes=cluster_nodes(addresses), **options)
    # Same commands as Redis (see the module's docstring).
    return cast(Redis, cluster)


async def open_pubsub(redis: Redis) -> PubSub:
    """A pub/sub connection. On a cluster the client learns the slot map first (its pub/sub picks
    a node by the channel's slot, and fails on a client that has sent nothing yet); classic
    channels reach a subscriber on any node, the cluster relays every message."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
    return redis.pubsub()
