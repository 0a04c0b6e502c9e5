"""Anti-entropy: the read models' versions compared with the write side's, drift repaired from the log.

A gap is noticed when a later event arrives; a read model that lost its last writes (a Redis
failover, a restore from an old snapshot, keys deleted by hand) has nothing arriving to tell.
This pass walks every aggregate the write side holds, a page per step from one walk per
aggregate type (each step is small, and the walk goes on where it stopped), and reads the
version each projection holds of it. An aggregate a projection holds behind the write side is
a suspect; a suspect still behind after `grace` seconds (longer than an event takes from the
command to the read model) is repaired: its published events up to the write side's version
are read from the events log and applied, the version guard skipping the ones present.

Events the relay has not published yet are left to Kafka (they are in flight, not lost), so a
Kafka outage is never "repaired" around the relay. A loss of the whole of Redis is the sentinel's
business (`readmodels.generations`): while the read models are lost this pass does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis

from events import EventEnvelope
from projectors.application.ports import Projection
from projectors.domain.outcomes import Outcome
from readmodels.versions import VERSIONED_STATES

log = logging.getLogger(__name__)

# Aggregate types in the order a sweep walks them.
AGGREGATE_TYPES: tuple[str, ...] = ("campaign", "user")
# Projections whose per-aggregate states feed shared counters: a state missing altogether is
# repaired by rebuilding the projection (see `_repair`).
RECOUNTED = frozenset({"stats"})
# Projections that keep shared indexes beside each state: a state missing altogether may have
# left its index entries behind (a key deleted by hand), which a replay from version 1 cannot
# see; the state is repaired at once (readable again) and the projection rebuilt after.
INDEXED = frozenset({"campaigns"})


def needs_rebuild(projection: str, from_version: int) -> bool:
    """Whether a repair that started from `from_version` (0: the state was missing altogether)
    leaves the projection to be rebuilt from the log to be exact."""
    return from_version == 0 and projection in RECOUNTED | INDEXED


# Aggregates repaired per step at most (each costs a read of the log and a write), so a large
# loss (a failover that dropped a minute of writes) is repaired at a bounded pace too: this many,
# or a quarter of a page if that is more (the pace a second stays that of pages of 200).
MAX_REPAIRS_PER_STEP = 50
# Suspects remembered at most (more drift than this is found again by the next sweep).
MAX_SUSPECTS = 10_000


class WriteSideVersions(Protocol):
    def pages(self, aggregate_type: str, size: int) -> AsyncGenerator[list[tuple[str, int]], None]: ...


class ReadModelVersions(Protocol):
    """The read models' side: the live generation, the versions held, and the status report."""

    async def live_generation(self, projection: Projection) -> str:
        """The live generation (`ReadModelsLost` when the read models are gone)."""
        ...

    async def versions(
        self, projection: Projection, generation: str, aggregate_type: str, aggregate_ids: Sequence[str]
    ) -> list[int]: ...

    async def record_repair(self, projection: Projection, repair: AntiEntropyRepair) -> None: ...


class PublishedLog(Protocol):
    async def aggregate_events(
        self,
        aggregate_type: str,
        aggregate_id: str,
        up_to_version: int | None = None,
        *,
        published_only: bool = False,
    ) -> list[EventEnvelope]: ...


@dataclass(frozen=True)
class AntiEntropyRepair:
    projection: str
    aggregate: str
    from_version: int
    to_version: int


@dataclass(frozen=True)
class Step:
    """What one step did: aggregates read from the write side, read-model keys compared, repairs."""

    aggregates: int
    keys_checked: int
    repairs: tuple[AntiEntropyRepair, ...]
    sweep_done: bool


@dataclass(frozen=True)
class _Suspect:
    write_version: int
    first_seen: float


@dataclass
class AntiEntropy:
    """One pass over the write side's aggregates, a page per `step(now)`."""

    projections: Sequence[Projection]
    redis: Redis  # handed to `Projection.apply`
    read_models: ReadModelVersions
    write_side: WriteSideVersions
    log: PublishedLog
    batch_size: int
    grace: float
    _type_index: int = 0
    _pages: AsyncGenerator[list[tuple[str, int]], None] | None = None
    _suspects: dict[tuple[str, str, str], _Suspect] = field(default_factory=dict)
    # Projections to rebuild from the log (the caller rebuilds them and clears this).
    rebuilds: set[str] = field(default_factory=set)

    @property
    def suspects(self) -> int:
        return len(self._suspects)

    @property
    def max_repairs(self) -> int:
        """Aggregates repaired per step at most."""
        return max(MAX_REPAIRS_PER_STEP, self.batch_size // 4)

    async def step(self, now: float, behind_in_kafka: frozenset[str] = frozenset()) -> Step:
        """Compare one page of aggregates, then repair the suspects whose grace is over.

        `behind_in_kafka`: projections whose consumers have a backlog to read; their suspects
        are most likely in that backlog, so their grace starts again rather than repairing
        (under load, repairs would only add work to the overloaded servers)."""
        aggregate_type = AGGREGATE_TYPES[self._type_index]
        if self._pages is None:
            self._pages = self.write_side.pages(aggregate_type, self.batch_size)
        try:
            page: list[tuple[str, int]] = await anext(self._pages, [])
        except BaseException:
            await self.close()  # a read failed (a server restarted): the walk starts again
            raise
        sweep_done = False
        if not page:
            await self.close()
            self._type_index = (self._type_index + 1) % len(AGGREGATE_TYPES)
            sweep_done = self._type_index == 0
        checked = 0
        generations: dict[str, str] = {}
        for projection in self._holding(aggregate_type):
            generation = await self.read_models.live_generation(projection)
            generations[projection.name] = generation
            ids = [aggregate_id for aggregate_id, _ in page]
            held = await self.read_models.versions(projection, generation, aggregate_type, ids)
            checked += len(ids)
            for (aggregate_id, write_version), read_version in zip(page, held, strict=True):
                key = (projection.name, aggregate_type, aggregate_id)
                if read_version >= write_version:
                    self._suspects.pop(key, None)
                elif key not in self._suspects and len(self._suspects) < MAX_SUSPECTS:
                    self._suspects[key] = _Suspect(write_version, now)
        for key, suspect in self._suspects.items():
            if key[0] in behind_in_kafka:
                self._suspects[key] = _Suspect(suspect.write_version, now)
        repairs = await self._repair_due(now, generations)
        return Step(len(page), checked, tuple(repairs), sweep_done)

    async def close(self) -> None:
        """Drop the walk (the next step starts the aggregate type again)."""
        pages, self._pages = self._pages, None
        if pages is not None:
            await pages.aclose()

    def _holding(self, aggregate_type: str) -> list[Projection]:
        return [p for p in self.projections if aggregate_type in VERSIONED_STATES.get(p.name, frozenset())]

    async def _repair_due(self, now: float, generations: dict[str, str]) -> list[AntiEntropyRepair]:
        due = [key for key, suspect in self._suspects.items() if now - suspect.first_seen >= self.grace]
        del due[self.max_repairs :]  # the rest stay due, for the next steps
        repairs = []
        by_name = {p.name: p for p in self.projections}
        for key in due:
            suspect = self._suspects.pop(key)
            projection = by_name[key[0]]
            if key[0] not in generations:
                generations[key[0]] = await self.read_models.live_generation(projection)
            repair = await self._repair(
                projection, generations[key[0]], key[1], key[2], suspect.write_version
            )
            if repair is not None:
                repairs.append(repair)
        return repairs

    async def _repair(
        self,
        projection: Projection,
        generation: str,
        aggregate_type: str,
        aggregate_id: str,
        write_version: int,
    ) -> AntiEntropyRepair | None:
        [held] = await self.read_models.versions(projection, generation, aggregate_type, [aggregate_id])
        if held >= write_version:
            return None  # caught up by Kafka meanwhile
        events = await self.log.aggregate_events(
            aggregate_type, aggregate_id, up_to_version=write_version, published_only=True
        )
        missing: list[EventEnvelope] = []
        for event in events:  # the run right after the version held (no event parked by a repair)
            if event.aggregate_version == held + len(missing) + 1:
                missing.append(event)
        if not missing:
            return None  # not published yet: in flight, Kafka brings it
        if held == 0 and projection.name in RECOUNTED:
            # A contribution to shared counters is gone: whether the counters still hold it (a
            # key deleted by hand) or lost it with it (a lost write) cannot be told, so the
            # projection is recounted from the log rather than risk counting it twice.
            self.rebuilds.add(projection.name)
            return None
        result = await projection.apply(self.redis, generation, missing)
        applied = [
            e.aggregate_version
            for e, outcome in zip(missing, result.outcomes, strict=True)
            if outcome.outcome is Outcome.APPLIED
        ]
        if not applied:
            return None
        if needs_rebuild(projection.name, held):
            self.rebuilds.add(projection.name)
        member = f"{aggregate_type}:{aggregate_id}"
        repair = AntiEntropyRepair(projection.name, member, held, max(applied))
        log.warning(
            "read model drift repaired from the events log",
            extra={
                "projection": projection.name,
                "aggregate": member,
                "read_version": held,
                "repaired_to_version": repair.to_version,
                "write_version": write_version,
            },
        )
        await self.read_models.record_repair(projection, repair)
        return repair
