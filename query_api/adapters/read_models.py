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
from query_api.adapters.redis_multiplexer import ClusterMultiplexer, RedisMultiplexer, RedisUnavailable
from query_api.domain.listing import CampaignFilters, SortOrder, merge_bucket_pages
from readmodels.generations import PROJECTIONS, initial_generation, live_generations, read_models_whole
from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, generation_base
from readmodels.scripts import ScriptArg, list_campaigns_script, pipelined
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
        multiplexer: RedisMultiplexer | ClusterMultiplexer | None = None,
        cache: CampaignCache | None = None,
        buckets: int = 1,
    ) -> None:
        self.redis = redis
        self.buckets = buckets
        self.generations = generations
        self.multiplexer = multiplexer
        self.cache = cache

    async def _hmget(self, key: str, *fields: str) -> list[bytes | str | None]:
        if self.multiplexer is not None:
            reply: list[bytes | None] = await self.multiplexer.execute("HMGET", key, *fields)
            return list(reply)
        return list(await self.redis.hmget(key, fields))

    async def campaign(self, campaign_id: str, *, confirm_missing: bool = True) -> Snapshot:
        """The campaign's snapshot. One that is missing is confirmed against the sentinel (a lost
        Redis raises rather than reads as a 404) unless `confirm_missing` is False: a
        `min_version` read, which never answers 404 for a missing campaign (it waits, then 503),
        and which was most of the query API's sentinel checks (two a fresh read)."""
        base = self.generations.base("campaigns")
        cache = self.cache
        if cache is None:
            snapshot = await self._campaign(base, campaign_id)
        else:
            cached = cache.get(base, campaign_id)
            if cached is not None:
                return cached
            ticket = cache.ticket()
            snapshot = await self._campaign(base, campaign_id)
            cache.put(base, campaign_id, snapshot, ticket)
        return await self.generations.confirm(snapshot) if confirm_missing else snapshot

    async def _campaign(self, base: str, campaign_id: str) -> Snapshot:
        key = CampaignKeys(base, self.buckets).campaign(campaign_id)
        doc, owner, version = await self._hmget(key, "doc", "x:owner", "v")
        return Snapshot(_bytes(doc), _str(owner), int(version) if version else 0)

    async def user(self, user_id: str) -> Snapshot:
        key = UserKeys(self.generations.base("users"), self.buckets).user(user_id)
        doc, version = await self._hmget(key, "doc", "v")
        snapshot = Snapshot(_bytes(doc), user_id if doc else None, int(version) if version else 0)
        return await self.generations.confirm(snapshot)

    async def campaign_page(
        self, filters: CampaignFilters, sort: SortOrder, limit: int, after: bytes | None
    ) -> tuple[list[bytes], bytes | None]:
        """Up to `limit` documents after the member `after`, and the member to continue from.

        Every bucket's share of the page (lua/list_campaigns.lua, one call per bucket, pipelined:
        one write per node), merged k-way by member, then the documents in a second pipeline.
        """
        keys = CampaignKeys(self.generations.base("campaigns"), self.buckets)
        script = list_campaigns_script()
        budget = max(LIST_SCAN_BUDGET // self.buckets, 2 * (limit + 1))
        calls: list[tuple[int, list[ScriptArg]]] = []
        for bucket in range(self.buckets):
            indexes: list[ScriptArg] = [
                keys.filtered_index(sort.index_key, pair, bucket) for pair in filters.index_pairs()
            ] or [keys.filtered_index(sort.index_key, None, bucket)]
            args: list[ScriptArg] = ["1" if sort.descending else "0", limit, after or b"", budget]
            calls.append((len(indexes), [*indexes, *args]))
        shares = []
        for reply in await script.run_pipelined(self.redis, calls):
            if isinstance(reply, BaseException):
                raise reply
            frontier, *members = reply
            shares.append((frontier, members))
        members, next_member = merge_bucket_pages(shares, limit, sort.descending)
        if not members:
            return [], next_member
        fetches: list[tuple[ScriptArg, ...]] = [
            ("HGET", keys.campaign(member.rpartition(b"\0")[2].decode()), "doc") for member in members
        ]
        docs = []
        for doc in await pipelined(self.redis, fetches):
            if isinstance(doc, BaseException):
                raise doc  # never a page with a hole (a slot still moving: 503)
            if isinstance(doc, bytes):  # (deleted since its index page was read)
                docs.append(doc)
        return docs, next_member

    async def stats(self, minutes: list[datetime]) -> tuple[dict[str, int], dict[str, int], list[int]]:
        """Counters, budget counters, and the events of each of `minutes`: each bucket's, summed."""
        keys = StatsKeys(self.generations.base("stats"), self.buckets)
        fields = [m.strftime("%Y-%m-%dT%H:%M") for m in minutes]
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(self.buckets):
            pipe.hgetall(keys.counts(bucket))
            pipe.hgetall(keys.budget(bucket))
            pipe.hmget(keys.events_per_minute(bucket), fields)
        replies = await pipe.execute()
        counts: dict[str, int] = {}
        budget: dict[str, int] = {}
        per_minute = [0] * len(minutes)
        for n in range(0, len(replies), 3):
            for total, reply in ((counts, replies[n]), (budget, replies[n + 1])):
                for name, value in reply.items():
                    total[name.decode()] = total.get(name.decode(), 0) + int(value)
            for position, value in enumerate(replies[n + 2]):
                if value:
                    per_minute[position] += int(value)
        return counts, budget, per_minute
