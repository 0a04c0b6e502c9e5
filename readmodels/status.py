"""What each projector reports about itself in Redis: heartbeat, position and counters.

The query API's readiness reads the heartbeat (stale beyond the freshness limit = not ready);
the monitor shows the whole hash. It lives outside the generations: it describes the process,
not the read model. Beside the hash, a capped list of the projector's newest repairs (gap
repairs, anti-entropy repairs), which the console's gaps view lists.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from readmodels.json_form import json_time
from readmodels.keyspace import projector_status_key, repairs_key

# Repairs kept per projection (`Settings.repairs_kept`'s default).
REPAIRS_KEPT = 100


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
    repair: Mapping[str, Any] | None = None,
    repairs_kept: int = REPAIRS_KEPT,
) -> None:
    """Counters and fields into the projector's status; `repair` (a JSON-ready description of
    a repair) onto the front of its repairs list, stamped with the time, `repairs_kept` kept."""
    key = projector_status_key(prefix, projection)
    pipe = redis.pipeline(transaction=False)
    for name, amount in counters.items():
        if amount:
            pipe.hincrby(key, name, amount)
    values: dict[Any, Any] = {name: str(value) for name, value in fields.items()}
    values.setdefault("last_batch_at", f"{time.time():.3f}")
    pipe.hset(key, mapping=values)
    if repair is not None:
        line = {**repair, "at": json_time(datetime.now(UTC))}
        pipe.lpush(repairs_key(prefix, projection), orjson.dumps(line))
        pipe.ltrim(repairs_key(prefix, projection), 0, max(1, repairs_kept) - 1)
    await pipe.execute()


async def recent_repairs(redis: Redis, prefix: str, projection: str, limit: int) -> list[dict[str, Any]]:
    """The projection's newest `limit` repairs, newest first (unreadable lines left out)."""
    lines = []
    for raw in await redis.lrange(repairs_key(prefix, projection), 0, max(1, limit) - 1):  # type: ignore[misc,unused-ignore]
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


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
