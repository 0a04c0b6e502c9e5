"""Reading bucketed read-model keys in tests (readmodels.keyspace): counters summed over buckets."""

from __future__ import annotations

from redis.asyncio import Redis


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
