"""The stats projection in Redis: one script call per bucket per batch, not one per event.

A batch's events are grouped by their aggregate's bucket, keeping the batch's order within each
group (an aggregate's events all fall in its bucket, so they stay in order); each group goes to
`lua/stats_batch.lua` in calls of at most `EVENTS_PER_CALL` events, all calls pipelined (on a
cluster, one packed write per primary). The script holds every event to the version guard
(duplicate, applied, parked behind a gap, drained when the gap fills, refused), sums the
counters' moves over its events and writes each counter field once and each bucket's states
with one HSET. Counters are sums, so events of different aggregates may be counted in any order;
those of one aggregate never are.

Every key a call touches is declared in KEYS, all of one bucket (its hash tag), so one slot: the
bucket's counters, parked set and two hashes of states (key layout 2 of stats, `StatsKeys`),
then each aggregate's parked hash once.

Kept from one event a call (`ScriptProjection` with lua/stats.lua, the `one_event_a_call` this
projection is given): a generation marked with an earlier key layout (1: a hash per aggregate) is
written by it as before, until the projectors' rebuild swaps it out; and a call refused as a
whole (an error reply that is not the infrastructure's, such as a key of another type: the script
writes nothing before it has decided every event) is sent again through it, one event a call, so
only the events refused on their own fail. The stats projection announces nothing
(`readmodels.groups.ANNOUNCING`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events import EventEnvelope
from projectors.adapters.group_spec import FromItsGroupSpec
from projectors.adapters.transient import is_transient
from projectors.application.ports import Projection
from projectors.domain.outcomes import ApplyResult, EventOutcome, Outcome
from readmodels.campaigns import packed_id
from readmodels.generations import GenerationClaim
from readmodels.json_form import json_time
from readmodels.keyspace import StatsKeys, bucket_of, generation_base, parked_key, parked_set_key
from readmodels.scripts import LuaScript, ScriptArg, stats_batch_script
from readmodels.stats import stats_change_args

# Events per script call: a call of 256 events keeps Redis busy about a millisecond (readers wait
# meanwhile), and a batch of a few hundred events on one bucket still makes one or two calls.
EVENTS_PER_CALL = 256


@dataclass(frozen=True)
class StatsCall:
    """One lua/stats_batch.lua call: its bucket, the batch positions of its events (in order),
    its keys and its arguments."""

    bucket: int
    positions: list[int]
    keys: list[ScriptArg]
    args: list[ScriptArg]

    @property
    def command(self) -> tuple[int, list[ScriptArg]]:
        return len(self.keys), [*self.keys, *self.args]


def plan_calls(
    envelopes: Sequence[EventEnvelope],
    base: str,
    buckets: int,
    projected_at: str,
    events_per_call: int = EVENTS_PER_CALL,
) -> tuple[list[StatsCall], dict[int, str]]:
    """The calls that apply `envelopes` to the generation at `base`: one per bucket touched (more
    past `events_per_call` events), the batch's order kept within each; and the events refused
    before any call, batch position -> why (an event the projection has no rule for)."""
    refused: dict[int, str] = {}
    by_bucket: dict[int, list[tuple[int, EventEnvelope, list[ScriptArg]]]] = {}
    for position, envelope in enumerate(envelopes):
        try:
            change: list[ScriptArg] = [packed_id(envelope.aggregate_id), *stats_change_args(envelope)]
        except (ValueError, KeyError) as exc:
            refused[position] = str(exc)
            continue
        by_bucket.setdefault(bucket_of(envelope.aggregate_id, buckets), []).append(
            (position, envelope, change)
        )
    keys = StatsKeys(base, buckets)
    calls = []
    for bucket, events in by_bucket.items():
        for start in range(0, len(events), events_per_call):
            names: list[ScriptArg] = [
                keys.counts(bucket),
                keys.budget(bucket),
                keys.events_per_minute(bucket),
                parked_set_key(base, buckets, bucket),
                keys.campaign_states(bucket),
                keys.user_states(bucket),
            ]
            parked_at: dict[str, int] = {}  # member -> its parked hash's position in KEYS
            args: list[ScriptArg] = [projected_at]
            positions = []
            for position, envelope, change in events[start : start + events_per_call]:
                kind, aggregate_id = envelope.aggregate_type, envelope.aggregate_id
                member = f"{kind}:{aggregate_id}"
                parked = parked_at.get(member)
                if parked is None:
                    names.append(parked_key(base, kind, aggregate_id, buckets))
                    parked = parked_at[member] = len(names)
                args += [parked, member, str(envelope.aggregate_version), len(change), *change]
                positions.append(position)
            calls.append(StatsCall(bucket, positions, names, args))
    return calls, refused


class OneEventACall(Projection, Protocol):
    """The stats projection applied one event a call (`redis_projection.ScriptProjection`)."""

    async def writes_earlier_layout(self, redis: Redis, generation: str) -> bool: ...


@dataclass(frozen=True)
class StatsProjection(FromItsGroupSpec):
    name: str
    prefix: str
    buckets: int
    one_event_a_call: OneEventACall

    @property
    def script(self) -> LuaScript:
        return stats_batch_script()

    async def apply(
        self,
        redis: Redis,
        generation: str,
        envelopes: Sequence[EventEnvelope],
        *,
        announce: bool = True,
        claim: GenerationClaim | None = None,
    ) -> ApplyResult:
        """Apply `envelopes` in order, each guarded by its aggregate's version."""
        if claim is not None:  # nothing to read first: confirmed on its own
            await claim.check(redis)
        one_by_one = self.one_event_a_call
        if await one_by_one.writes_earlier_layout(redis, generation):
            return await one_by_one.apply(redis, generation, envelopes, announce=announce)
        projected_at = json_time(datetime.now(UTC))
        calls, refused = plan_calls(
            envelopes, generation_base(self.prefix, generation), self.buckets, projected_at
        )
        outcomes: list[EventOutcome | None] = [None] * len(envelopes)
        for position, why in refused.items():
            outcomes[position] = EventOutcome(Outcome.FAILED, error=f"{self.name}: {why}")
        if calls:
            replies = await self.script.run_pipelined(redis, [call.command for call in calls])
            again: list[int] = []
            for call, reply in zip(calls, replies, strict=True):
                if _refused_whole(reply):
                    again += call.positions
                    continue
                for position, outcome in zip(call.positions, _outcomes(reply), strict=True):
                    outcomes[position] = outcome
            if again:
                again.sort()  # the batch's order
                alone = await one_by_one.apply(
                    redis, generation, [envelopes[p] for p in again], announce=announce
                )
                for position, outcome in zip(again, alone.outcomes, strict=True):
                    outcomes[position] = outcome
        return ApplyResult([o for o in outcomes if o is not None])


def _refused_whole(reply: object) -> bool:
    # A server's trouble (loading, a failover, a moved slot) raises: the batch is retried, never
    # dead-lettered. Any other error reply refused the whole call.
    if isinstance(reply, ResponseError) and not is_transient(reply):
        return True
    if isinstance(reply, BaseException):
        raise reply
    return False


def _outcomes(reply: Any) -> list[EventOutcome]:
    assert isinstance(reply, list), reply
    outcomes = []
    for n in range(0, len(reply), 2):
        status, detail = reply[n].decode(), reply[n + 1]
        if status == "refused":
            outcomes.append(EventOutcome(Outcome.FAILED, error=detail.decode()))
        else:
            outcomes.append(EventOutcome(Outcome(status), drained=int(detail)))
    return outcomes
