"""Reading the Redis read models of the live generations: one round trip per request at most.

Documents are stored as ready-to-send JSON, so nothing here parses or re-encodes them. A
campaign's detail may come from the process's `CampaignCache` instead (see there for why it
is never stale for long).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from redis.asyncio import Redis

from query_api.adapters.campaign_cache import CampaignCache
from query_api.adapters.redis_multiplexer import RedisMultiplexer, RedisUnavailable
from query_api.domain.listing import CampaignFilters, SortOrder
from readmodels.generations import PROJECTIONS, initial_generation, live_generations, read_models_whole
from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, generation_base
from readmodels.scripts import list_campaigns_script
from readmodels.snapshot import Snapshot

log = logging.getLogger(__name__)

# Most index members one list call examines: bounds the time a page holds Redis; a sparse
# filter combination gets a short page with a cursor to continue.
LIST_SCAN_BUDGET = 5000
GENERATION_REFRESH_SECONDS = 1.0


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _str(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class GenerationCache:
    """The live generation of each projection, kept in memory: a read costs no pointer lookup.

    Refreshed on the swap announcement and every second (in case an announcement was missed);
    a replaced generation stays readable for a while, so a stale second is harmless.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.live = {p: initial_generation(p) for p in PROJECTIONS}
        self.seen_whole = False
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def base(self, projection: str) -> str:
        if self.lost:
            raise RedisUnavailable("the read models are being rebuilt after a Redis loss")
        return generation_base(self.prefix, self.live[projection])

    async def refresh(self) -> None:
        self.live = await live_generations(self.redis, self.prefix)
        await self.check_whole()

    async def check_whole(self) -> None:
        """Lost: the sentinel gone after it was seen, or a rebuild after a loss under way. Until
        the projectors rebuild the read models, every read is a 503 rather than a 404 or an
        empty page. (A fresh Redis, where no projector has written the sentinel yet, is not.)"""
        sentinel, rebuilding = await read_models_whole(self.redis, self.prefix)
        self.seen_whole = self.seen_whole or sentinel
        self.lost = not sentinel and (self.seen_whole or rebuilding)

    async def confirm(self, snapshot: Snapshot) -> Snapshot:
        """A read that found nothing checks the sentinel first: a 404 only if nothing was lost."""
        if snapshot.version == 0:
            await self.check_whole()
            self.base("campaigns")  # raises if lost
        return snapshot

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # Start anyway (readiness reports Redis); the poll below keeps trying.
            log.warning("generation pointers not read at start", exc_info=True)
        self._task = asyncio.create_task(self._poll(), name="generation-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(GENERATION_REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:
                log.warning("generation pointers not refreshed", exc_info=True)


class ReadModels:
    def __init__(
        self,
        redis: Redis,
        generations: GenerationCache,
        multiplexer: RedisMultiplexer | None = None,
        cache: CampaignCache | None = None,
    ) -> None:
        self.redis = redis
        self.generations = generations
        self.multiplexer = multiplexer
        self.cache = cache

    async def _hmget(self, key: str, *fields: str) -> list[bytes | str | None]:
        if self.multiplexer is not None:
            reply: list[bytes | None] = await self.multiplexer.execute("HMGET", key, *fields)
            return list(reply)
        return list(await self.redis.hmget(key, fields))

    async def campaign(self, campaign_id: str) -> Snapshot:
        base = self.generations.base("campaigns")
        cache = self.cache
        if cache is None:
            return await self.generations.confirm(await self._campaign(base, campaign_id))
        cached = cache.get(base, campaign_id)
        if cached is not None:
            return cached
        ticket = cache.ticket()
        snapshot = await self._campaign(base, campaign_id)
        cache.put(base, campaign_id, snapshot, ticket)
        return await self.generations.confirm(snapshot)

    async def _campaign(self, base: str, campaign_id: str) -> Snapshot:
        key = CampaignKeys(base).campaign(campaign_id)
        doc, owner, version = await self._hmget(key, "doc", "x:owner", "v")
        return Snapshot(_bytes(doc), _str(owner), int(version) if version else 0)

    async def user(self, user_id: str) -> Snapshot:
        key = UserKeys(self.generations.base("users")).user(user_id)
        doc, version = await self._hmget(key, "doc", "v")
        snapshot = Snapshot(_bytes(doc), user_id if doc else None, int(version) if version else 0)
        return await self.generations.confirm(snapshot)

    async def campaign_page(
        self, filters: CampaignFilters, sort: SortOrder, limit: int, after: bytes | None
    ) -> tuple[list[bytes], bytes | None]:
        """Up to `limit` documents after the member `after`, and the member to continue from."""
        keys = CampaignKeys(self.generations.base("campaigns"))
        indexes: list[bytes | str | int] = [
            keys.filtered_index(sort.index_key, pair) for pair in filters.index_pairs()
        ] or [keys.filtered_index(sort.index_key, None)]
        args: list[bytes | str | int] = [
            keys.campaign_key_start,
            "1" if sort.descending else "0",
            limit,
            after or b"",
            LIST_SCAN_BUDGET,
        ]
        reply = await list_campaigns_script().run(self.redis, indexes, args)
        next_member, *docs = reply
        return docs, next_member or None

    async def stats(self, minutes: list[datetime]) -> tuple[dict[str, int], dict[str, int], list[int]]:
        """Counters, budget counters, and the events of each of `minutes`."""
        keys = StatsKeys(self.generations.base("stats"))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.counts)
        pipe.hgetall(keys.budget)
        pipe.hmget(keys.events_per_minute, [m.strftime("%Y-%m-%dT%H:%M") for m in minutes])
        counts, budget, per_minute = await pipe.execute()
        return (
            {k.decode(): int(v) for k, v in counts.items()},
            {k.decode(): int(v) for k, v in budget.items()},
            [int(v) if v else 0 for v in per_minute],
        )
