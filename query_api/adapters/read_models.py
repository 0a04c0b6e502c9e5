"""Reading the Redis read models of the live generations: one round trip per request at most.

Documents are stored as ready-to-send JSON, so nothing here parses or re-encodes them. A
campaign's detail may come from the process's `CampaignCache` instead (see there for why it
is never stale for long).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from query_api.adapters.campaign_cache import CampaignCache
from query_api.adapters.redis_multiplexer import (
    ClusterMultiplexer,
    RedisCommandError,
    RedisMultiplexer,
    RedisUnavailable,
)
from query_api.domain.listing import CampaignFilters, SortOrder, merge_bucket_pages
from readmodels.campaigns import PACKED_LAYOUT, SORTED_DIMENSIONS, member_campaign_id
from readmodels.generations import (
    LAYOUT_VERSIONS,
    PROJECTIONS,
    initial_generation,
    layout_marker,
    live_generations,
    read_models_whole,
)
from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, generation_base
from readmodels.scripts import LuaScript, ScriptArg, list_campaigns_script, pipelined
from readmodels.snapshot import Snapshot
from readmodels.stored_documents import document_json
from service_runtime.background import STOP_SECONDS, BackgroundLoops

log = logging.getLogger(__name__)

# The list's scan bounds (settings `list_scan_budget`, `list_scan_calls`): most index members
# one round of list calls examines, summed over the buckets (bounds the time a call holds
# Redis), and most rounds a page takes.
LIST_SCAN_BUDGET = 5000
LIST_SCAN_CALLS = 200
GENERATION_REFRESH_SECONDS = 1.0


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _document(value: bytes | str | None) -> bytes | None:
    """A campaign's JSON from its stored form (compressed from key layout 4)."""
    raw = _bytes(value)
    return None if raw is None else document_json(raw)


def _no_script(reply: object) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, RedisCommandError) and str(reply).startswith("NOSCRIPT")
    )


def _str(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class GenerationCache:
    """The live generation of each projection, kept in memory: a read costs no pointer lookup.

    Refreshed on the swap announcement and every second (in case an announcement was missed);
    a replaced generation stays readable for a while, so a stale second is harmless.
    `on_campaigns_base` (the campaign cache's `generation_seen`) is told the campaigns
    generation's base at every refresh that finds it changed, as soon as it is learnt.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        on_campaigns_base: Callable[[str], None] | None = None,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.on_campaigns_base = on_campaigns_base
        self.live = {p: initial_generation(p) for p in PROJECTIONS}
        # Each live generation's key base, made when `live` changes rather than on every read.
        self._bases = self._bases_of(self.live)
        # The key layout of the live campaigns generation (readmodels.generations.LAYOUT_VERSIONS):
        # an older one is read as it was written until the projectors' rebuild swaps it out.
        self.campaigns_layout = LAYOUT_VERSIONS["campaigns"]
        self.seen_whole = False
        self.lost = False
        self._loops = BackgroundLoops(stop_seconds)

    def base(self, projection: str) -> str:
        if self.lost:
            raise RedisUnavailable("the read models are being rebuilt after a Redis loss")
        return self._bases[projection]

    def _bases_of(self, live: dict[str, str]) -> dict[str, str]:
        return {
            projection: generation_base(self.prefix, generation) for projection, generation in live.items()
        }

    async def refresh(self) -> None:
        live = await live_generations(self.redis, self.prefix)
        marker = await layout_marker(self.redis, self.prefix, live["campaigns"])
        await self.check_whole()
        # No marker: the earlier layout where read models were kept whole before (a deployment
        # that predates the markers); on a fresh Redis, the projectors write this code's. The
        # generation and its layout change together (no await between): a page is read as its
        # generation was written.
        if marker is not None:
            layout = marker
        else:
            layout = 1 if self.seen_whole else LAYOUT_VERSIONS["campaigns"]
        swapped = live["campaigns"] != self.live["campaigns"]
        self.live = live
        self._bases = self._bases_of(live)
        self.campaigns_layout = layout
        if swapped and self.on_campaigns_base is not None:
            self.on_campaigns_base(self._bases["campaigns"])

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
        self._loops.start(self._poll(), "generation-refresh")

    async def stop(self) -> None:
        await self._loops.stop()

    async def _poll(self) -> None:
        while await self._loops.pause(GENERATION_REFRESH_SECONDS):
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
        scan_budget: int = LIST_SCAN_BUDGET,
        scan_calls: int = LIST_SCAN_CALLS,
    ) -> None:
        self.redis = redis
        self.buckets = buckets
        self.scan_budget = scan_budget
        self.scan_calls = scan_calls
        self.generations = generations
        self.multiplexer = multiplexer
        self.cache = cache

    async def _hmget(self, key: str, *fields: str) -> list[bytes | str | None]:
        if self.multiplexer is not None:
            reply: list[bytes | None] = await self.multiplexer.execute("HMGET", key, *fields)
            return list(reply)
        return list(await self.redis.hmget(key, fields))

    async def _pipelined(self, commands: Sequence[tuple[ScriptArg, ...]]) -> list[Any]:
        """Read commands in one write (per primary on a cluster), their replies in order, an error
        reply in its place: through the multiplexer's shared connections when there is one (its
        replies are parsed in C, a pooled redis-py connection's one by one in Python)."""
        if self.multiplexer is not None:
            return await self.multiplexer.execute_many(commands)
        return await pipelined(self.redis, commands)

    async def _run_script(
        self, script: LuaScript, calls: Sequence[tuple[int, Sequence[ScriptArg]]]
    ) -> list[Any]:
        """`LuaScript.run_pipelined` over `_pipelined`: loaded and run again if Redis lost it."""
        commands = [("EVALSHA", script.sha, keys, *args) for keys, args in calls]
        replies = await self._pipelined(commands)
        if any(_no_script(reply) for reply in replies):
            await script.load(self.redis)
            replies = await self._pipelined(commands)
        return replies

    def cached_campaign(self, campaign_id: str) -> Snapshot | None:
        """The campaign's snapshot if the campaign cache holds it (what `campaign` would answer
        first), without a coroutine; None: ask `campaign`."""
        cache, generations = self.cache, self.generations
        if cache is None or generations.lost:  # (lost: `campaign` answers it, with its 503)
            return None
        return cache.get(generations.base("campaigns"), campaign_id)

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
        return Snapshot(_document(doc), _str(owner), int(version) if version else 0)

    async def user(self, user_id: str) -> Snapshot:
        key = UserKeys(self.generations.base("users"), self.buckets).user(user_id)
        doc, version = await self._hmget(key, "doc", "v")
        snapshot = Snapshot(_bytes(doc), user_id if doc else None, int(version) if version else 0)
        return await self.generations.confirm(snapshot)

    async def campaign_page(
        self,
        filters: CampaignFilters,
        sort: SortOrder,
        limit: int,
        after: bytes | None,
        base: str | None = None,
    ) -> tuple[list[bytes], bytes | None]:
        """Up to `limit` documents after the member `after`, and the member to continue from, read
        from `base` (default: the live generation). (Whole pages are kept in the campaign cache by
        the caller, `campaigns.campaign_page_body`, keyed by the request.)"""
        return await self._campaign_page(
            base or self.generations.base("campaigns"), filters, sort, limit, after
        )

    async def _campaign_page(
        self, base: str, filters: CampaignFilters, sort: SortOrder, limit: int, after: bytes | None
    ) -> tuple[list[bytes], bytes | None]:
        """Up to `limit` documents after the member `after`, and the member to continue from.

        Every bucket's share of the page (lua/list_campaigns.lua, one call per bucket, pipelined:
        one write per node), merged k-way by member, then the documents in a second pipeline.
        A call examines a bounded number of index members; while the merged page is short and
        a bucket has more to examine, the buckets that bound it are called again from where
        they stopped (at most `scan_calls` rounds), so a selective filter still fills its page.
        """
        keys = CampaignKeys(base, self.buckets)
        script = list_campaigns_script()
        budget = max(self.scan_budget // self.buckets, 2 * (limit + 1))
        pairs = filters.index_pairs()
        # Walked: the owner's sorted index if the list is one owner's, else all campaigns';
        # intersected with it: the sets of the other filters (readmodels.campaigns). In the
        # earlier layout (until the projectors' rebuild swaps it out) every filter had a sorted
        # index: the first one is walked, the others' are looked up by member.
        layout = self.generations.campaigns_layout
        earlier = layout < 2
        packed = layout >= PACKED_LAYOUT
        member_format = "z" if earlier else "p" if packed else "s"
        walked = next((pair for pair in pairs if pair[0] in SORTED_DIMENSIONS), None)
        if earlier:
            walked = walked or next(iter(pairs), None)
            intersected = [pair for pair in pairs if pair != walked]
        else:
            intersected = [pair for pair in pairs if pair[0] not in SORTED_DIMENSIONS]

        def filter_keys(bucket: int) -> list[ScriptArg]:
            if earlier:
                return [keys.index(sort.index_key, *pair, bucket) for pair in intersected]
            return [keys.filter_set(dimension, value, bucket) for dimension, value in intersected]

        # Each bucket: the members found and not yet paged, and where its walk goes on (b"" at
        # the start: from `after`; None: nothing more).
        found: list[list[bytes]] = [[] for _ in range(self.buckets)]
        goes_on: list[bytes | None] = [after or b"" for _ in range(self.buckets)]
        members: list[bytes] = []
        next_member: bytes | None = None
        for _ in range(self.scan_calls):
            calls: list[tuple[int, list[ScriptArg]]] = []
            called: list[int] = []
            for bucket in range(self.buckets):
                cursor = goes_on[bucket]
                # A bucket holding more than `limit` members found is not what bounds the page.
                if cursor is None or len(found[bucket]) > limit:
                    continue
                indexes = [keys.filtered_index(sort.index_key, walked, bucket), *filter_keys(bucket)]
                args: list[ScriptArg] = [
                    "1" if sort.descending else "0",
                    limit - len(found[bucket]),
                    cursor,
                    budget,
                    member_format,
                ]
                calls.append((len(indexes), [*indexes, *args]))
                called.append(bucket)
            for bucket, reply in zip(called, await self._run_script(script, calls), strict=True):
                if isinstance(reply, BaseException):
                    raise reply
                frontier, *more = reply
                found[bucket] += more
                goes_on[bucket] = frontier or None
            shares = [(goes_on[b] or b"", found[b]) for b in range(self.buckets)]
            members, next_member = merge_bucket_pages(shares, limit, sort.descending)
            if len(members) >= limit or next_member is None:
                break
        if not members:
            return [], next_member
        fetches: list[tuple[ScriptArg, ...]] = [
            ("HGET", keys.campaign(member_campaign_id(member, packed)), "doc") for member in members
        ]
        docs = []
        for doc in await self._pipelined(fetches):
            if isinstance(doc, BaseException):
                raise doc  # never a page with a hole (a slot still moving: 503)
            if isinstance(doc, bytes):  # (deleted since its index page was read)
                docs.append(document_json(doc))
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
