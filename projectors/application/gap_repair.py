"""Gap repair: an event parked behind a missing version gets the missing versions from the log.

A projection parks an event whose predecessor has not arrived (see `redis_projection`). Nothing
may wait forever: once an aggregate has had parked events for `delay` seconds, the versions it
lacks are read from the MongoDB events log (the source of truth) and applied in order, and the
parked events drain after them. A version the log does not hold either is a gap nobody can fill:
the events parked behind it are dead-lettered (`gap_unfillable`, with the versions missing) and
removed from the parked set, never skipped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis

from events import EventEnvelope, InvalidEvent, Topics, decode_event, encode_event
from projectors.application.consume import DeadLetter, DeadLetterSink, EventRecord
from projectors.application.ports import Projection
from projectors.domain.outcomes import Outcome
from readmodels.generations import claim_while_whole
from readmodels.keyspace import generation_base, parked_key, parked_set_key_of, parked_set_keys
from readmodels.parked import parked_event
from readmodels.status import REPAIRS_KEPT, record_batch

log = logging.getLogger(__name__)

GAP_UNFILLABLE = "gap_unfillable"
# Aggregates repaired per scan at most (the rest wait for the next scan).
MAX_PER_SCAN = 100


class AggregateLog(Protocol):
    async def aggregate_events(
        self, aggregate_type: str, aggregate_id: str, up_to_version: int | None = None
    ) -> list[EventEnvelope]: ...


@dataclass(frozen=True)
class Repair:
    aggregate: str
    filled: tuple[int, ...]
    unfillable: tuple[int, ...]


@dataclass
class GapRepairer:
    """Repairs the parked aggregates of one projection; `scan(now)` is called periodically."""

    projection: Projection
    redis: Redis
    log: AggregateLog
    dead_letters: DeadLetterSink
    consumer_group: str
    topics: Topics
    delay: float
    repairs_kept: int = REPAIRS_KEPT
    _first_seen: dict[str, float] = field(default_factory=dict)

    async def scan(self, now: float) -> list[Repair]:
        prefix = self.projection.prefix
        generation = await claim_while_whole(self.redis, prefix, self.projection.name)
        base = generation_base(prefix, generation)
        pipe = self.redis.pipeline(transaction=False)
        for key in parked_set_keys(base, self.projection.buckets):
            pipe.smembers(key)
        members = {m.decode() for raw_members in await pipe.execute() for m in raw_members}
        self._first_seen = {m: t for m, t in self._first_seen.items() if m in members}
        due = []
        for member in sorted(members):
            first = self._first_seen.setdefault(member, now)
            if now - first >= self.delay:
                due.append(member)
        repairs = []
        for member in due[:MAX_PER_SCAN]:
            repair = await self.repair(generation, member)
            self._first_seen.pop(member, None)
            if repair is not None:
                repairs.append(repair)
        return repairs

    async def repair(self, generation: str, member: str) -> Repair | None:
        aggregate_type, _, aggregate_id = member.partition(":")
        base = generation_base(self.projection.prefix, generation)
        parked = await self._parked(base, aggregate_type, aggregate_id)
        if not parked:
            await self.redis.srem(parked_set_key_of(base, aggregate_id, self.projection.buckets), member)
            return None
        events = await self.log.aggregate_events(aggregate_type, aggregate_id, up_to_version=max(parked))
        missing = [e for e in events if e.aggregate_version not in parked]
        result = await self.projection.apply(self.redis, generation, missing)
        filled = tuple(
            e.aggregate_version
            for e, outcome in zip(missing, result.outcomes, strict=True)
            if outcome.outcome is Outcome.APPLIED
        )
        left = await self._parked(base, aggregate_type, aggregate_id)
        unfillable: tuple[int, ...] = ()
        absent: list[int] = []
        if left:
            have = {e.aggregate_version for e in events} | set(parked)
            absent = [v for v in range(1, max(left)) if v not in have]
            unfillable = tuple(sorted(left))
            logged = {e.aggregate_version: encode_event(e) for e in events}
            await self._dead_letter(base, aggregate_type, aggregate_id, left, absent, logged)
        report = Repair(member, filled, unfillable)
        log.warning(
            "gap repaired from the events log" if filled else "gap not repaired",
            extra={
                "projection": self.projection.name,
                "aggregate": member,
                "filled_versions": list(filled),
                "unfillable_versions": list(unfillable),
            },
        )
        await record_batch(
            self.redis,
            self.projection.prefix,
            self.projection.name,
            counters={"gaps_repaired_total": 1 if filled else 0, "gaps_unfillable_total": 1 if left else 0},
            fields={
                "last_gap": f"{member} filled {list(filled)} unfillable {list(unfillable)}",
            },
            repair={
                "kind": "gap",
                "aggregate": member,
                "filled": list(filled),
                "unfillable": list(unfillable),
                "missing": list(absent) if left else [],
            },
            repairs_kept=self.repairs_kept,
        )
        return report

    async def _parked(self, base: str, aggregate_type: str, aggregate_id: str) -> dict[int, bytes]:
        entries: dict[bytes, bytes] = await self.redis.hgetall(  # type: ignore[misc,assignment,unused-ignore]
            parked_key(base, aggregate_type, aggregate_id, self.projection.buckets)
        )
        return {int(version): raw for version, raw in entries.items()}

    async def _dead_letter(
        self,
        base: str,
        aggregate_type: str,
        aggregate_id: str,
        left: dict[int, bytes],
        absent: Sequence[int],
        logged: dict[int, bytes],
    ) -> None:
        topic = self.topics.for_aggregate(aggregate_type)
        missing = list(absent)
        reason = (
            f"versions {missing} of {aggregate_type} {aggregate_id} are in neither Kafka nor the events log"
        )
        letters = []
        for version in sorted(left):
            # The event as the log holds it where it does (users and stats park a packed change).
            raw = logged.get(version) or parked_event(left[version])
            headers: tuple[tuple[str, bytes], ...] = ()
            try:
                envelope = decode_event(raw)
                headers = (
                    ("event_type", envelope.event_type.encode()),
                    ("event_id", str(envelope.event_id).encode()),
                    ("correlation_id", envelope.correlation_id.encode()),
                    ("aggregate_version", str(version).encode()),
                )
            except InvalidEvent:
                pass
            record = EventRecord(topic, -1, -1, aggregate_id.encode(), raw, headers)
            letters.append(DeadLetter(record, reason, GAP_UNFILLABLE, self.consumer_group))
        await self.dead_letters.send(letters)
        buckets = self.projection.buckets
        key = parked_key(base, aggregate_type, aggregate_id, buckets)
        # One MULTI: the parked hash and its bucket's parked set share a slot.
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(key, *[str(v) for v in left])
        pipe.srem(parked_set_key_of(base, aggregate_id, buckets), f"{aggregate_type}:{aggregate_id}")
        await pipe.execute()
