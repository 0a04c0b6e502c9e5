"""The campaign projection in Redis: read each campaign once per batch, plan, write once, guarded.

Per batch: one pipelined read of every campaign the batch touches (version, document,
tombstone, owner, and how many events are parked), the whole batch planned in memory
(`campaign_plan`), then one pipelined `cas.lua` call per campaign that writes the planned
document, index memberships, version, parked events and notices — only if the version and
parked count are still what was read. A campaign whose state moved in between (another
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

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from events import EventEnvelope, InvalidEvent, decode_event, encode_event
from projectors.adapters.group_spec import FromItsGroupSpec
from projectors.adapters.notices import notice_prefix
from projectors.domain.campaign_plan import CampaignPlan, StoredCampaign, plan_campaign
from projectors.domain.outcomes import ApplyResult, EventOutcome
from readmodels.campaigns import PACKED_LAYOUT, campaign_document, filter_moves, membership_moves, set_member
from readmodels.generations import GenerationClaim, layout_marker
from readmodels.json_form import json_time
from readmodels.keyspace import CampaignKeys, announcement_channel_of, generation_base
from readmodels.parked import campaign_entry, parked_event
from readmodels.scripts import LuaScript, ScriptArg, cas_script, read_states_script
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
    """The KEYS of one cas.lua call: each key once, named in ARGV by its position."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = len(self.positions) + 1
        return position

    @property
    def keys(self) -> list[ScriptArg]:
        return list(self.positions)


@dataclass(frozen=True)
class CampaignsProjection(FromItsGroupSpec):
    name: str
    prefix: str
    buckets: int = 1
    # generation -> its index members are packed (layout 3 and later): a generation keeps its
    # layout for life, so its marker is read once.
    _packed: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

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
        packed = await self.packs(redis, generation)
        by_campaign: dict[str, list[int]] = defaultdict(list)
        for position, envelope in enumerate(envelopes):
            by_campaign[envelope.aggregate_id].append(position)
        outcomes: list[EventOutcome | None] = [None] * len(envelopes)
        pending = list(by_campaign)
        for _ in range(MAX_ATTEMPTS):
            reads = await self._read(redis, base, pending, cluster, claim)
            claim = None
            plans = {
                cid: plan_campaign(reads[cid].stored, [envelopes[p] for p in by_campaign[cid]])
                for cid in pending
            }
            stale = await self._write(redis, base, announcing, plans, reads, cluster, packed)
            for cid in pending:
                if cid not in stale:
                    for position, outcome in zip(by_campaign[cid], plans[cid].outcomes, strict=True):
                        outcomes[position] = outcome
            if not stale:
                return ApplyResult([o for o in outcomes if o is not None])
            pending = stale
        raise RuntimeError(f"campaigns kept changing while being projected: {', '.join(pending[:5])}")

    async def packs(self, redis: Redis, generation: str) -> bool:
        """Whether `generation`'s index members are packed: its layout marker's (an upgraded
        deployment's live generation keeps the form it was built with until its rebuild swaps
        it out); a generation with none yet, such as one a rebuild is filling, gets this code's."""
        packed = self._packed.get(generation)
        if packed is None:
            marker = await layout_marker(redis, self.prefix, generation)
            packed = self._packed[generation] = marker is None or marker >= PACKED_LAYOUT
        return packed

    async def _read(
        self,
        redis: Redis,
        base: str,
        campaign_ids: list[str],
        cluster: bool,
        claim: GenerationClaim | None = None,
    ) -> dict[str, _Read]:
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
        reads = {}
        for n, cid in enumerate(campaign_ids):
            version, doc, deleted, owner, count = replies[5 * n : 5 * n + 5]
            stored = StoredCampaign(
                version=int(version or 0),
                state=orjson.loads(doc) if doc and not deleted else None,
                deleted=bool(deleted),
                owner=(owner or b"").decode(),
                parked=parked.get(cid, {}),
            )
            reads[cid] = _Read(stored, int(count))
        return reads

    async def _write(
        self,
        redis: Redis,
        base: str,
        announcing: bool,
        plans: dict[str, CampaignPlan],
        reads: dict[str, _Read],
        cluster: bool,
        packed: bool,
    ) -> list[str]:
        """Run every plan's guarded write; the campaigns whose state had moved (nothing written)."""
        now = json_time(datetime.now(UTC))
        projected_at = f',"projected_at":"{now}"}}'.encode()
        keys = CampaignKeys(base, self.buckets)
        changed = [cid for cid, plan in plans.items() if plan.changed]
        if not changed:
            return []
        # Several calls, not one: a script blocks Redis while it runs, and readers are waiting.
        calls: list[tuple[int, list[ScriptArg]]] = []
        for group in _calls(changed, keys, WRITE_CHUNK, cluster):
            table = _KeyTable()
            args: list[ScriptArg] = []
            for cid in group:
                plan = plans[cid]
                notices = (
                    [notice_prefix(e, self.name, plan.owner) + projected_at for e in plan.applied]
                    if announcing
                    else []
                )
                # The campaign's key first: a call is routed by its first key.
                writes = _writes(keys, table, cid, plan, reads[cid].parked_count, now, packed)
                channel = table(announcement_channel_of(self.prefix, cid, self.buckets)) if notices else 0
                args += [
                    cid,
                    table(keys.campaign(cid)),
                    channel,
                    table(keys.parked(cid)),
                    plan.before.version,
                    reads[cid].parked_count,
                    len(notices),
                    len(writes),
                    *notices,
                    *writes,
                ]
            names = table.keys
            calls.append((len(names), [*names, *args]))
        replies = await _run(redis, self.script, calls)
        return [stale.decode() for reply in replies for stale in reply]


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


def _command(*parts: ScriptArg) -> list[ScriptArg]:
    return [parts[0], len(parts) - 1, *parts[1:]]


def _writes(
    keys: CampaignKeys,
    table: _KeyTable,
    cid: str,
    plan: CampaignPlan,
    parked_count: int,
    now: str,
    packed: bool = True,
) -> list[ScriptArg]:
    """cas.lua's writes of one campaign, each key named by its position in the call's KEYS."""
    bucket = keys.bucket_of(cid)
    key = table(keys.campaign(cid))
    writes: list[ScriptArg] = []
    before = plan.before
    for move in membership_moves(before.state, plan.state, packed):
        if move.leaves:
            removed = [table(keys.filtered_index(move.sort, where, bucket)) for where in move.leaves]
            writes += _command("ZREMFROM", move.old_member, *removed)
        if move.joins:
            added = [table(keys.filtered_index(move.sort, where, bucket)) for where in move.joins]
            writes += _command("ZADDTO", move.new_member, *added)
    left_sets, joined_sets = filter_moves(before.state, plan.state)
    if left_sets or joined_sets:
        in_sets = set_member(cid, packed)
        for dimension, value in left_sets:
            writes += _command("SREM", table(keys.filter_set(dimension, value, bucket)), in_sets)
        for dimension, value in joined_sets:
            writes += _command("SADD", table(keys.filter_set(dimension, value, bucket)), in_sets)

    if plan.deleted and not before.deleted:
        writes += _command("DEL", key)
        writes += _command("HSET", key, "deleted", "1", "x:owner", plan.owner, "v", plan.version)
    elif plan.state is not None and plan.state is not before.state:
        document = campaign_document(plan.state)
        writes += _command("HSET", key, "doc", document, "x:owner", plan.owner, "v", plan.version)
    elif plan.version != before.version:
        writes += _command("HSET", key, "v", plan.version)

    parked = table(keys.parked(cid))
    member = f"{AGGREGATE_TYPE}:{cid}"
    if plan.unparked:
        writes += _command("HDEL", parked, *plan.unparked)
    for version, envelope in plan.newly_parked.items():
        writes += _command("HSET", parked, version, campaign_entry(encode_event(envelope), now))
    left = parked_count - len(plan.unparked) + len(plan.newly_parked)
    if plan.newly_parked:
        writes += _command("SADD", table(keys.parked_set(bucket)), member)
    elif left == 0 and parked_count:
        writes += _command("SREM", table(keys.parked_set(bucket)), member)
    return writes
