"""The projections applied to Redis, each atomic and idempotent per aggregate version.

`Projection.apply(redis, generation, envelopes)` knows nothing of Kafka: the projectors call it
with each consumed batch, and the replay tool can call it with events read from the log into
a new generation (with `announce=False`, so the monitor does not see a replay as live traffic),
then compare `digest.generation_digest` of both generations and `generations.swap_generation`.

The campaigns projection (the busiest) reads each campaign once per batch, plans the batch in
memory and writes it with one guarded call per campaign (`campaigns_projection`). Stats runs one
script call per bucket per batch (`stats_projection`), users one per event, pipelined. The rules
are the same for all three, per event (for users inside lua/guard.lua, for stats in
lua/stats_batch.lua): version <= last applied -> DUPLICATE, nothing
written; version == last + 1 -> APPLIED (change, version and announcement together); version
> last + 1 -> PARKED: the event is stored beside the read model, not applied, and applied as
soon as the missing version arrives. Parking rather than refusing the batch keeps one bad or
lost event from stalling its whole partition behind it, while the aggregate itself never moves
out of order; the parked set (`keys.parked_set_key`) and the projector status show what waits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events import EventEnvelope
from projectors.adapters.campaigns_projection import CampaignsProjection
from projectors.adapters.group_spec import FromItsGroupSpec
from projectors.adapters.notices import notice_prefix
from projectors.adapters.stats_projection import StatsProjection
from projectors.adapters.transient import is_transient
from projectors.application.ports import Projection
from projectors.domain.outcomes import ApplyResult, EventOutcome, Outcome
from readmodels.campaigns import packed_id
from readmodels.generations import LAYOUT_VERSIONS, GenerationClaim, GenerationLayouts
from readmodels.json_form import json_time
from readmodels.keyspace import (
    StatsKeys,
    UserKeys,
    announcement_channel_of,
    bucket_of,
    generation_base,
    parked_key,
    parked_set_key_of,
)
from readmodels.scripts import LuaScript, ScriptArg, apply_script
from readmodels.stats import stats_change_args
from readmodels.users import user_change_args

StateKey = Callable[[str, EventEnvelope], str]
ChangeArgs = Callable[[EventEnvelope], Sequence[ScriptArg]]
# The keys of the generation (`base`) the script writes besides the aggregate's own: all in the
# aggregate's bucket, so one call stays in one slot.
OwnKeys = Callable[[str, EventEnvelope], Sequence[str]]


@dataclass(frozen=True)
class ScriptProjection(FromItsGroupSpec):
    """A read model applied by its own Lua script, one guarded call per event (users; stats
    where `StatsProjection` hands it a generation of an earlier layout or a refused call)."""

    name: str
    prefix: str
    state_key: StateKey
    change_args: ChangeArgs
    own_keys: OwnKeys = lambda base, envelope: ()
    buckets: int = 1
    # The script (readmodels.scripts.apply_script), when not the projection's name.
    script_name: str | None = None
    # The key layout this writes, and how generations marked with an earlier one are written (a
    # deployment upgraded across a layout change writes its live generation as it was built
    # until the projectors' rebuild swaps it out; a generation with no marker yet, such as one a
    # rebuild is filling, gets this layout).
    layout: int = 1
    earlier: ScriptProjection | None = None
    _layouts: GenerationLayouts = field(default_factory=GenerationLayouts, compare=False, repr=False)

    @property
    def script(self) -> LuaScript:
        return apply_script(self.script_name or self.name)

    async def writes_earlier_layout(self, redis: Redis, generation: str) -> bool:
        """Whether `generation` is marked with an earlier key layout, written by `earlier`."""
        if self.earlier is None:
            return False
        return await self._layouts.of(redis, self.prefix, generation, self.layout) < self.layout

    async def apply(
        self,
        redis: Redis,
        generation: str,
        envelopes: Sequence[EventEnvelope],
        *,
        announce: bool = True,
        claim: GenerationClaim | None = None,
    ) -> ApplyResult:
        """Apply `envelopes` in order; each one atomically guarded by its aggregate's version."""
        if claim is not None:  # nothing to read first: confirmed on its own
            await claim.check(redis)
        if self.earlier is not None and await self.writes_earlier_layout(redis, generation):
            return await self.earlier.apply(redis, generation, envelopes, announce=announce)
        base = generation_base(self.prefix, generation)
        announcing = announce and self.announces
        projected_at = json_time(datetime.now(UTC))
        outcomes: list[EventOutcome | None] = [None] * len(envelopes)
        calls: list[tuple[int, tuple[int, list[ScriptArg]]]] = []
        for position, envelope in enumerate(envelopes):
            try:
                change = self.change_args(envelope)
            except (ValueError, KeyError) as exc:
                outcomes[position] = EventOutcome(Outcome.FAILED, error=f"{self.name}: {exc}")
                continue
            member = f"{envelope.aggregate_type}:{envelope.aggregate_id}"
            aggregate_id = envelope.aggregate_id
            keys: list[ScriptArg] = [
                self.state_key(base, envelope),
                parked_key(base, envelope.aggregate_type, aggregate_id, self.buckets),
                parked_set_key_of(base, aggregate_id, self.buckets),
                *self.own_keys(base, envelope),
            ]
            channel: ScriptArg = ""
            if announcing:
                # Declared in KEYS: a shard channel is slot-checked like a key (lua/guard.lua).
                keys.append(announcement_channel_of(self.prefix, aggregate_id, self.buckets))
                channel = len(keys)
            notice = notice_prefix(envelope, self.name) if announcing else b""
            args = [channel, projected_at, member, str(envelope.aggregate_version), notice, *change]
            calls.append((position, (len(keys), [*keys, *args])))
        if calls:
            replies = await self._execute(redis, calls)
            for (position, _), reply in zip(calls, replies, strict=True):
                outcomes[position] = _outcome(reply)
        return ApplyResult([o for o in outcomes if o is not None])

    async def _execute(
        self, redis: Redis, calls: list[tuple[int, tuple[int, list[ScriptArg]]]]
    ) -> list[object]:
        # After a lost script cache every call runs again: the ones that had run are duplicates
        # the second time, which the guard ignores.
        return await self.script.run_pipelined(redis, [call for _, call in calls])


def _outcome(reply: object) -> EventOutcome:
    # A server's trouble (loading, a failover, a moved slot) raises: the batch is retried, never
    # dead-lettered. Only the script's own refusal of the event is its failure.
    if isinstance(reply, ResponseError) and not is_transient(reply):
        return EventOutcome(Outcome.FAILED, error=str(reply))
    if isinstance(reply, BaseException):
        raise reply
    assert isinstance(reply, list), reply
    status, drained = reply
    return EventOutcome(Outcome(status.decode()), drained=int(drained))


def campaigns_projection(prefix: str, buckets: int = 1) -> CampaignsProjection:
    return CampaignsProjection(name="campaigns", prefix=prefix, buckets=buckets)


def users_projection(prefix: str, buckets: int = 1) -> Projection:
    return ScriptProjection(
        name="users",
        prefix=prefix,
        state_key=lambda base, e: UserKeys(base, buckets).user(e.aggregate_id),
        change_args=user_change_args,
        buckets=buckets,
    )


def stats_projection(prefix: str, buckets: int = 1) -> StatsProjection:
    """One lua/stats_batch.lua call per bucket per batch; one event a call (lua/stats.lua, and
    lua/stats_layout1.lua for a generation of layout 1) where `StatsProjection` says."""

    # An aggregate's stats state is a field of its bucket's hash of states (readmodels.keyspace.
    # StatsKeys.campaign_states): the hash is the script's KEYS[1], the field leads the change.
    def state_key(base: str, envelope: EventEnvelope) -> str:
        keys = StatsKeys(base, buckets)
        bucket = bucket_of(envelope.aggregate_id, buckets)
        return keys.user_states(bucket) if envelope.aggregate_type == "user" else keys.campaign_states(bucket)

    def change_args(envelope: EventEnvelope) -> list[ScriptArg]:
        return [packed_id(envelope.aggregate_id), *stats_change_args(envelope)]

    def layout1_state_key(base: str, envelope: EventEnvelope) -> str:
        keys = StatsKeys(base, buckets)
        if envelope.aggregate_type == "user":
            return keys.layout1_user(envelope.aggregate_id)
        return keys.layout1_campaign(envelope.aggregate_id)

    def counters(base: str, envelope: EventEnvelope) -> Sequence[str]:
        return StatsKeys(base, buckets).counters(envelope.aggregate_id)

    one_event_a_call = ScriptProjection(
        name="stats",
        prefix=prefix,
        state_key=state_key,
        change_args=change_args,
        own_keys=counters,
        buckets=buckets,
        layout=LAYOUT_VERSIONS["stats"],
        earlier=ScriptProjection(
            name="stats",
            prefix=prefix,
            state_key=layout1_state_key,
            change_args=stats_change_args,
            own_keys=counters,
            buckets=buckets,
            script_name="stats_layout1",
        ),
    )
    return StatsProjection(name="stats", prefix=prefix, buckets=buckets, one_event_a_call=one_event_a_call)


def all_projections(prefix: str, buckets: int = 1) -> list[Projection]:
    """The three projections; `buckets` is `Settings.read_model_buckets` (readmodels.keyspace)."""
    return [
        campaigns_projection(prefix, buckets),
        users_projection(prefix, buckets),
        stats_projection(prefix, buckets),
    ]
