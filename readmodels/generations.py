"""Generations: which copy of each projection is live, named by one pointer key per projection.

Projectors write to the live generation; the query API reads it; the replay tool builds a new
generation beside it and swaps the pointer with `swap_generation`. Generation names are
`{projection}.{n}`, so keys of different projections never share a base.
"""

from __future__ import annotations

from redis.asyncio import Redis

from readmodels.groups import PROJECTIONS
from readmodels.keyspace import generations_channel, pointer_key


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = [
    "PROJECTIONS",
    "claim_live_generation",
    "initial_generation",
    "live_generations",
    "swap_generation",
]


def initial_generation(projection: str) -> str:
    return f"{projection}.1"


async def live_generations(redis: Redis, prefix: str) -> dict[str, str]:
    """The live generation of every projection (the initial one where none was ever set)."""
    values = await redis.mget([pointer_key(prefix, p) for p in PROJECTIONS])
    return {
        projection: _text(value) if value is not None else initial_generation(projection)
        for projection, value in zip(PROJECTIONS, values, strict=True)
    }


async def claim_live_generation(redis: Redis, prefix: str, projection: str) -> str:
    """The live generation, set to the initial one if none is (what a projector writes to)."""
    key = pointer_key(prefix, projection)
    pipe = redis.pipeline(transaction=False)
    pipe.set(key, initial_generation(projection), nx=True)
    pipe.get(key)
    _, value = await pipe.execute()
    return _text(value)


async def swap_generation(redis: Redis, prefix: str, projection: str, generation: str) -> str | None:
    """Make `generation` live; returns the one it replaced. Readers are told on the channel."""
    old = await redis.getset(pointer_key(prefix, projection), generation)
    await redis.publish(generations_channel(prefix), projection)
    return _text(old) if old is not None else None
