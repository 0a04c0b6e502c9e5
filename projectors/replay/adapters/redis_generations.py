"""The generations in Redis, as replay uses them: pointers, clearing, digests and the rebuild lock.

Everything here goes through the read side's own functions (`generations`, `digest`), so a
replay and the projectors agree on names and layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from projectors.adapters.digest import (
    generation_digest,
    generation_key_digests,
    generation_key_pages,
    generation_keys,
)
from projectors.replay.application.ports import BusyError, LiveGenerationError
from readmodels.generations import (
    claim_live_generation,
    drop_layout,
    live_generations,
    swap_generation,
)
from readmodels.keyspace import replay_lock_key

log = logging.getLogger(__name__)

# The lock expires on its own if the rebuild dies; a live rebuild extends it long before.
LOCK_SECONDS = 30.0
UNLINK_CHUNK = 1000


class RedisGenerations:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def claim_live(self, projection: str) -> str:
        return await claim_live_generation(self.redis, self.prefix, projection)

    async def live(self, projection: str) -> str:
        return (await live_generations(self.redis, self.prefix))[projection]

    async def clear(self, generation: str) -> int:
        if generation in (await live_generations(self.redis, self.prefix)).values():
            raise LiveGenerationError(f"{generation} is live; swap another generation in first")
        # A page at a time, unlinked as SCAN finds it: the old generation of a million campaigns
        # held whole was the replay's peak RSS (it grew ~130 B a campaign past the fold window).
        # Unlinking behind the cursor is safe: SCAN still returns every key that stays.
        removed = 0
        async for page in generation_key_pages(self.redis, self.prefix, generation, UNLINK_CHUNK):
            removed += await self.redis.unlink(*page)
        await drop_layout(self.redis, self.prefix, generation)
        return removed

    async def key_count(self, generation: str) -> int:
        return len(await generation_keys(self.redis, self.prefix, generation))

    async def swap(self, projection: str, generation: str) -> str | None:
        return await swap_generation(self.redis, self.prefix, projection, generation)

    async def digest(self, generation: str) -> str:
        return await generation_digest(self.redis, self.prefix, generation)

    async def key_digests(self, generation: str) -> dict[bytes, str]:
        return await generation_key_digests(self.redis, self.prefix, generation)

    @contextlib.asynccontextmanager
    async def exclusive(self, projections: Sequence[str]) -> AsyncIterator[None]:
        locks: list[Lock] = []
        try:
            for projection in projections:
                lock = self.redis.lock(replay_lock_key(self.prefix, projection), timeout=LOCK_SECONDS)
                if not await lock.acquire(blocking=False):
                    raise BusyError(f"another rebuild of {projection} is running")
                locks.append(lock)
            keeper = asyncio.create_task(_keep(locks), name="replay-lock-keeper")
            try:
                yield
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
        finally:
            for lock in locks:
                with contextlib.suppress(LockError):
                    await lock.release()


async def _keep(locks: list[Lock]) -> None:
    while True:
        await asyncio.sleep(LOCK_SECONDS / 3)
        for lock in locks:
            try:
                await lock.reacquire()
            except LockError:
                log.warning("replay lock lost; another rebuild may start", exc_info=True)
