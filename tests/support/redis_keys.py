"""Reading bucketed read-model keys in tests (readmodels.keyspace): counters summed over buckets."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster


async def summed_hashes(redis: Redis, keys: list[str]) -> dict[str, int]:
    """Field -> the sum of that field over `keys` (each bucket's share of a counter hash)."""
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    total: dict[str, int] = {}
    for reply in await pipe.execute():
        for name, value in reply.items():
            total[name.decode()] = total.get(name.decode(), 0) + int(value)
    return total


async def keys_per_primary(redis: Redis, pattern: str) -> dict[str, int]:
    """How many keys matching `pattern` each primary holds (one entry on standalone Redis)."""
    if not isinstance(redis, RedisCluster):
        return {"standalone": len([key async for key in redis.scan_iter(match=pattern, count=1000)])}
    await redis.initialize()  # a client that has sent nothing yet knows no primaries
    counts: dict[str, int] = {}
    for node in redis.get_primaries():
        cursor, found = 0, 0
        while True:
            # redis-py's cluster SCAN answers ({node name: next cursor}, keys).
            cursors, keys = await redis.scan(cursor, match=pattern, count=1000, target_nodes=node)
            cursor = cursors[node.name]
            found += len(keys)
            if cursor == 0:
                break
        counts[node.name] = found
    return counts
