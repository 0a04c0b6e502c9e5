"""What each projector reports about itself in Redis: heartbeat, position and counters.

The query API's readiness reads the heartbeat (stale beyond the freshness limit = not ready);
the monitor shows the whole hash. It lives outside the generations: it describes the process,
not the read model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from readmodels.keyspace import projector_status_key


async def write_heartbeat(redis: Redis, prefix: str, projection: str, fields: Mapping[str, Any]) -> None:
    values: dict[Any, Any] = {name: str(value) for name, value in fields.items()}
    values["heartbeat_at"] = f"{time.time():.3f}"
    await redis.hset(projector_status_key(prefix, projection), mapping=values)


async def record_batch(
    redis: Redis,
    prefix: str,
    projection: str,
    counters: Mapping[str, int],
    fields: Mapping[str, Any],
) -> None:
    key = projector_status_key(prefix, projection)
    pipe = redis.pipeline(transaction=False)
    for name, amount in counters.items():
        if amount:
            pipe.hincrby(key, name, amount)
    values: dict[Any, Any] = {name: str(value) for name, value in fields.items()}
    values.setdefault("last_batch_at", f"{time.time():.3f}")
    pipe.hset(key, mapping=values)
    await pipe.execute()


async def read_status(redis: Redis, prefix: str, projections: list[str]) -> dict[str, dict[str, str]]:
    pipe = redis.pipeline(transaction=False)
    for projection in projections:
        pipe.hgetall(projector_status_key(prefix, projection))
    replies = await pipe.execute()
    return {
        projection: {k.decode(): v.decode() for k, v in reply.items()}
        for projection, reply in zip(projections, replies, strict=True)
    }


def heartbeat_age(status: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds since the projector's last heartbeat, or None if it never reported."""
    beat = status.get("heartbeat_at")
    if beat is None:
        return None
    return (now if now is not None else time.time()) - float(beat)
