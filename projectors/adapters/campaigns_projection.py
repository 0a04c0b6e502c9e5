"""The campaign projection in Redis: read each campaign once per batch, plan, write once, guarded.

Per batch: one pipelined read of every campaign the batch touches (version, document,
tombstone, owner, and how many events are parked), then the campaigns planned in memory
(`campaign_plan`) 64 at a time, each 64's `cas.lua` call sent as soon as they are planned (Redis
runs it while the next 64 are planned). The call writes each campaign's planned document,
index memberships, version, parked events and notices — only if its version and parked count
are still what was read. A campaign whose state moved in between (another
instance during a rebalance, a redelivery racing itself) is read and planned again.

Redis runs only the writes, never a JSON decode or a membership computation: those were most
of the per-event Lua script this replaced (66 µs of Redis time an event).

Index writes are only the memberships a batch moves (readmodels.campaigns): a campaign's member
in all campaigns' and its owner's sorted index of each sort key, and its id in the sets of its
status, channel and tags; several events of one campaign in a batch make one write.

Stored per campaign (hash): `doc` (the JSON sent to clients), `v`, `x:owner` (who may read it);
a deleted campaign keeps `deleted`, `x:owner` and `v` (the tombstone). Parked events are kept
as their JSON form with the time they were parked, version -> entry (`readmodels.parked`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import orjson
from redis.asyncio import Redis

from events import EventEnvelope, InvalidEvent, decode_event, encode_event
from projectors.adapters.group_spec import FromItsGroupSpec
from projectors.adapters.notices import notice_prefix
from projectors.domain.campaign_plan import CampaignPlan, StoredCampaign, plan_campaign
from projectors.domain.outcomes import ApplyResult, EventOutcome
from readmodels.campaigns import (
    PACKED_LAYOUT,
    IndexFilter,
    campaign_document,
    filter_moves,
    membership_moves,
    set_member,
)
from readmodels.generations import LAYOUT_VERSIONS, GenerationClaim, GenerationLayouts
from readmodels.json_form import json_time
from readmodels.keyspace import CampaignKeys, announcement_channel_of, generation_base
from readmodels.parked import campaign_entry, parked_event
from readmodels.scripts import LuaScript, ScriptArg, cas_script, read_states_script
from readmodels.stored_documents import COMPRESSED_LAYOUT, document_json, stored_form
from service_runtime.redis_client import is_cluster

# A campaign whose state keeps moving under us is planned again this many times, then the batch
# fails (and is consumed again).
MAX_ATTEMPTS = 8
AGGREGATE_TYPE = "campaign"
# Campaigns per script call: a call of 64 campaigns' writes keeps Redis busy ~2 ms.
WRITE_CHUNK = 64
READ_CHUNK = 256


@dataclass(slots=True)
class _Read:
    stored: StoredCampaign
    parked_count: int  # as Redis holds it, unreadable entries included


class StoredForm(NamedTuple):
    """What Redis holds for one campaign, its document as stored (compressed or JSON: see
    `readmodels.stored_documents`); None if never created or deleted."""

    version: int
    document: bytes | None
    deleted: bool
    owner: str
    parked: dict[int, EventEnvelope]
    parked_count: int  # as Redis holds it, unreadable entries included


def stored_fields(document: bytes | None) -> dict[str, Any] | None:
    """A campaign's fields from its document as Redis stores it (`StoredForm.document`)."""
    return None if document is None else orjson.loads(document_json(document))


def _calls(campaign_ids: list[str], keys: CampaignKeys, chunk: int, cluster: bool) -> list[list[str]]:
    """The campaigns of each script call: `chunk` at most, and on a cluster all of one bucket
    (a script's keys must share a slot)."""
    if not cluster:
        return [campaign_ids[n : n + chunk] for n in range(0, len(campaign_ids), chunk)]
    by_bucket: dict[int, list[str]] = defaultdict(list)
    for cid in campaign_ids:
        by_bucket[keys.bucket_of(cid)].append(cid)
    return [ids[n : n + chunk] for ids in by_bucket.values() for n in range(0, len(ids), chunk)]


class _KeyTable:
    """The KEYS of one cas.lua call: each key once, named in ARGV by its position. The index and
    set keys are remembered by what they are rather than by name, so each name is built once a
    call (a call's campaigns share their bucket's all-campaigns indexes and status sets)."""

    def __init__(self, keys: CampaignKeys) -> None:
        self.campaign_keys = keys
        self.positions: dict[str, int] = {}
        self._named: dict[tuple[str, str, IndexFilter | str, int], int] = {}

    def __call__(self, key: str) -> int:
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = len(self.positions) + 1
        return position

    def named(self, kind: str, first: str, second: IndexFilter | str, bucket: int) -> int:
        """The position of a bucket's sorted index (`"index"`, sort, filter) or filter set
        (`"set"`, dimension, value)."""
        what = (kind, first, second, bucket)
        position = self._named.get(what)
        if position is None:
            keys = self.campaign_keys
            if kind == "index":
                name = keys.filtered_index(first, cast(IndexFilter, second), bucket)
            else:
                name = keys.filter_set(first, cast(str, second), bucket)
            position = self._named[what] = self(name)
        return position

    @property
    def keys(self) -> list[ScriptArg]:
        return list(self.positions)


@dataclass(frozen=True)
class CampaignsProjection(FromItsGroupSpec):
    name: str
    prefix: str
    buckets: int = 1
    # Each generation's key layout (packed index members from 3, compressed documents from 4).
    _layouts: GenerationLayouts = field(default_factory=GenerationLayouts, compare=False, repr=False)

    @property
    def script(self) -> LuaScript:
        return cas_script()

    async def apply(
        self,
        redis: Redis,
        generation: str,
        envelopes: Sequence[EventEnvelope],
        *,
        announce: bool = True,
        claim: GenerationClaim | None = None,
    ) -> ApplyResult:
        """Apply `envelopes` in order: the version guard per event, one guarded write per campaign.
        `claim` (of `generation`) is sent with the first reads and confirmed before they are used."""
        base = generation_base(self.prefix, generation)
        announcing = announce and self.announces
        cluster = is_cluster(redis)
        layout = await self.layout(redis, generation)
        by_campaign: dict[str, list[int]] = defaultdict(list)
        for position, envelope in enumerate(envelopes):
            by_campaign[envelope.aggregate_id].append(position)
        outcomes: list[EventOutcome | None] = [None] * len(envelopes)
        pending = list(by_campaign)
        for _ in range(MAX_ATTEMPTS):
            reads = await self._read(redis, base, pending, cluster, claim)
            claim = None
            plans, stale = await self._plan_and_write(
                redis,
                base,
                announcing,
                pending,
                reads,
                lambda cid: [envelopes[p] for p in by_campaign[cid]],
                cluster,
                layout,
            )
            for cid in pending:
                if cid not in stale:
                    for position, outcome in zip(by_campaign[cid], plans[cid].outcomes, strict=True):
                        outcomes[position] = outcome
            if not stale:
                return ApplyResult([o for o in outcomes if o is not None])
            pending = stale
        raise RuntimeError(f"campaigns kept changing while being projected: {', '.join(pending[:5])}")

    async def layout(self, redis: Redis, generation: str) -> int:
        """The key layout `generation` is written in: its layout marker's (an upgraded
        deployment's live generation keeps the form it was built with until its rebuild swaps
        it out); a generation with none yet, such as one a rebuild is filling, gets this code's."""
        return await self._layouts.of(redis, self.prefix, generation, LAYOUT_VERSIONS["campaigns"])

    async def _read(
        self,
        redis: Redis,
        base: str,
        campaign_ids: list[str],
        cluster: bool,
        claim: GenerationClaim | None = None,
    ) -> dict[str, _Read]:
        forms = await self._read_stored(redis, base, campaign_ids, cluster, claim)
        return {
            cid: _Read(
                StoredCampaign(
                    version=form.version,
                    state=stored_fields(form.document),
                    deleted=form.deleted,
                    owner=form.owner,
                    parked=form.parked,
                ),
                form.parked_count,
            )
            for cid, form in forms.items()
        }

    async def _read_stored(
        self,
        redis: Redis,
        base: str,
        campaign_ids: list[str],
        cluster: bool,
        claim: GenerationClaim | None = None,
    ) -> dict[str, StoredForm]:
        """What Redis holds for each campaign, its document as stored (not decoded)."""
        keys = CampaignKeys(base, self.buckets)
        calls: list[tuple[int, list[ScriptArg]]] = []
        grouped = _calls(campaign_ids, keys, READ_CHUNK, cluster)
        for group in grouped:
            names: list[ScriptArg] = []
            for cid in group:
                names += [keys.campaign(cid), keys.parked(cid)]
            calls.append((len(names), names))
        campaign_ids = [cid for group in grouped for cid in group]
        replies = [
            value for reply in await _run(redis, read_states_script(), calls, claim) for value in reply
        ]
        with_parked = [cid for n, cid in enumerate(campaign_ids) if replies[5 * n + 4]]
        parked: dict[str, dict[int, EventEnvelope]] = {}
        if with_parked:
            pipe = redis.pipeline(transaction=False)
            for cid in with_parked:
                pipe.hgetall(keys.parked(cid))
            for cid, entries in zip(with_parked, await pipe.execute(), strict=True):
                parked[cid] = _readable(entries)
        forms = {}
        for n, cid in enumerate(campaign_ids):
            version, doc, deleted, owner, count = replies[5 * n : 5 * n + 5]
            forms[cid] = StoredForm(
                version=int(version or 0),
                document=doc if doc and not deleted else None,
                deleted=bool(deleted),
                owner=(owner or b"").decode(),
                parked=parked.get(cid, {}),
                parked_count=int(count),
            )
        return forms

    async def _plan_and_write(
        self,
        redis: Redis,
        base: str,
        announcing: bool,
        campaign_ids: list[str],
        reads: dict[str, _Read],
        events_of: Callable[[str], list[EventEnvelope]],
        cluster: bool,
        layout: int,
    ) -> tuple[dict[str, CampaignPlan], list[str]]:
        """Plan the campaigns one script call's worth at a time and send each call as soon as it
        is planned, so that Redis runs a call while the next one is planned here rather than the
        two taking turns (a batch of 500 events is ~8 calls; Redis's share of an event, 75-140 µs
        as its indexes grow, was time the live projector spent waiting). Each call goes on its own
        connection; the calls touch disjoint campaigns, so their order does not matter. Returns
        every plan and the campaigns whose state had moved (nothing written for those)."""
        keys = CampaignKeys(base, self.buckets)
        now, projected_at = _now()
        plans: dict[str, CampaignPlan] = {}
        writes: list[asyncio.Future[list[Any]]] = []
        try:
            for group in _calls(campaign_ids, keys, WRITE_CHUNK, cluster):
                for cid in group:
                    plans[cid] = plan_campaign(reads[cid].stored, events_of(cid))
                call = self._call(keys, group, plans, reads, announcing, now, projected_at, layout)
                if call is not None:
                    writes.append(asyncio.ensure_future(_run(redis, self.script, [call])))
                    await asyncio.sleep(0)  # the task sends its call now, then waits for the reply
            replies = [reply for write in writes for reply in await write]
        except BaseException:
            for write in writes:
                write.cancel()
            await asyncio.gather(*writes, return_exceptions=True)
            raise
        return plans, [stale.decode() for reply in replies for stale in reply]

    async def _write(
        self,
        redis: Redis,
        base: str,
        announcing: bool,
        plans: dict[str, CampaignPlan],
        reads: dict[str, _Read],
        cluster: bool,
        layout: int,
    ) -> list[str]:
        """Run every plan's guarded write in one pipelined round trip; the campaigns whose state
        had moved (nothing written)."""
        now, projected_at = _now()
        keys = CampaignKeys(base, self.buckets)
        # Several calls, not one: a script blocks Redis while it runs, and readers are waiting.
        calls = [
            call
            for group in _calls(list(plans), keys, WRITE_CHUNK, cluster)
            if (call := self._call(keys, group, plans, reads, announcing, now, projected_at, layout))
        ]
        if not calls:
            return []
        replies = await _run(redis, self.script, calls)
        return [stale.decode() for reply in replies for stale in reply]

    def _call(
        self,
        keys: CampaignKeys,
        group: list[str],
        plans: dict[str, CampaignPlan],
        reads: dict[str, _Read],
        announcing: bool,
        now: str,
        projected_at: bytes,
        layout: int,
    ) -> tuple[int, list[ScriptArg]] | None:
        """cas.lua's call for the campaigns of `group` that the plans change (None: none do)."""
        table = _KeyTable(keys)
        args: list[ScriptArg] = []
        for cid in group:
            plan = plans[cid]
            if not plan.changed:
                continue
            notices = (
                [notice_prefix(e, self.name, plan.owner) + projected_at for e in plan.applied]
                if announcing
                else []
            )
            # The campaign's key first: a call is routed by its first key.
            key, parked = table(keys.campaign(cid)), table(keys.parked(cid))
            writes = _writes(keys, table, cid, plan, reads[cid].parked_count, now, layout, (key, parked))
            channel = table(announcement_channel_of(self.prefix, cid, self.buckets)) if notices else 0
            args += [
                cid,
                key,
                channel,
                parked,
                plan.before.version,
                reads[cid].parked_count,
                len(notices),
                len(writes),
                *notices,
                *writes,
            ]
        if not args:
            return None
        names = table.keys
        return len(names), [*names, *args]


def _now() -> tuple[str, bytes]:
    """Now in the JSON form, and the end of a notice that carries it as `projected_at`."""
    now = json_time(datetime.now(UTC))
    return now, f',"projected_at":"{now}"}}'.encode()


async def _run(
    redis: Redis,
    script: LuaScript,
    calls: list[tuple[int, list[ScriptArg]]],
    claim: GenerationClaim | None = None,
) -> list[Any]:
    """`script` once per call, pipelined; any error reply raised. A guarded write that ran before
    a lost script cache made the calls run again finds its version moved, and is planned again.
    With `claim`, its reads go in the same write and are confirmed first (raising if the
    generation is no longer live: these replies are then of no use)."""
    before = claim.commands if claim is not None else []
    replies = await script.run_pipelined(redis, calls, before)
    if claim is not None:
        claim.confirm(replies[: len(before)])
        replies = replies[len(before) :]
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


def _readable(entries: dict[bytes, bytes]) -> dict[int, EventEnvelope]:
    parked = {}
    for version, raw in entries.items():
        try:
            parked[int(version)] = decode_event(parked_event(raw))
        except (InvalidEvent, ValueError):
            continue  # left where it is, still counted and visible in the parked set
    return parked


def _writes(
    keys: CampaignKeys,
    table: _KeyTable,
    cid: str,
    plan: CampaignPlan,
    parked_count: int,
    now: str,
    layout: int = LAYOUT_VERSIONS["campaigns"],
    positions: tuple[int, int] | None = None,
) -> list[ScriptArg]:
    """cas.lua's writes of one campaign in the key layout of its generation, each key named by
    its position in the call's KEYS (a command is its name, its argument count and its
    arguments); `positions`: those of the campaign's hash and parked hash, if the caller has
    them."""
    packed = layout >= PACKED_LAYOUT
    bucket = keys.bucket_of(cid)
    key, parked = positions or (table(keys.campaign(cid)), table(keys.parked(cid)))
    writes: list[ScriptArg] = []
    before = plan.before
    for move in membership_moves(before.state, plan.state, packed):
        if move.leaves:
            removed = [table.named("index", move.sort, where, bucket) for where in move.leaves]
            writes += ("ZREMFROM", len(removed) + 1, move.old_member, *removed)
        if move.joins:
            added = [table.named("index", move.sort, where, bucket) for where in move.joins]
            writes += ("ZADDTO", len(added) + 1, move.new_member, *added)
    left_sets, joined_sets = filter_moves(before.state, plan.state)
    if left_sets or joined_sets:
        in_sets = set_member(cid, packed)
        for dimension, value in left_sets:
            writes += ("SREM", 2, table.named("set", dimension, value, bucket), in_sets)
        for dimension, value in joined_sets:
            writes += ("SADD", 2, table.named("set", dimension, value, bucket), in_sets)

    if plan.deleted and not before.deleted:
        writes += ("DEL", 1, key)
        writes += ("HSET", 7, key, "deleted", "1", "x:owner", plan.owner, "v", plan.version)
    elif plan.state is not None and plan.state is not before.state:
        document = campaign_document(plan.state)
        if layout >= COMPRESSED_LAYOUT:
            document = stored_form(document)
        writes += ("HSET", 7, key, "doc", document, "x:owner", plan.owner, "v", plan.version)
    elif plan.version != before.version:
        writes += ("HSET", 3, key, "v", plan.version)

    if not parked_count and not plan.parked:
        return writes  # nothing parked before or after (nearly every event)
    member = f"{AGGREGATE_TYPE}:{cid}"
    unparked, newly_parked = plan.unparked, plan.newly_parked
    if unparked:
        writes += ("HDEL", len(unparked) + 1, parked, *unparked)
    for version, envelope in newly_parked.items():
        writes += ("HSET", 3, parked, version, campaign_entry(encode_event(envelope), now))
    left = parked_count - len(unparked) + len(newly_parked)
    if newly_parked:
        writes += ("SADD", 2, table(keys.parked_set(bucket)), member)
    elif left == 0 and parked_count:
        writes += ("SREM", 2, table(keys.parked_set(bucket)), member)
    return writes
