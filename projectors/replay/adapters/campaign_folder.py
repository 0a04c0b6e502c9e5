"""The campaigns projection in a replay: every campaign folded in memory, written once per window.

A generation being rebuilt has one writer until the swap (this replay), so its state need not
round-trip through Redis after every batch as the live projector's does. The folder keeps each
campaign it has seen as a `StoredCampaign`: what Redis holds for it (read once, on its first
event in the window) and what the events read since then made of it, planned by the live
projector's own `plan_campaign`, event by event, in order. When `max_campaigns` are held (and at
the end of every pass), each changed campaign is written once, from what Redis holds to its
folded state, by the live projector's own guarded write (`CampaignsProjection._write`): the keys
and values are those the live projector writes for the same events, only without the
intermediate states. So a campaign's five events cost one read, five in-memory plans and one
write instead of five of each; the window is a setting, and memory is bounded by it, never by
the log.

The write of a full window runs in the background, `write_campaigns` campaigns per pipeline,
while the next window is read and folded; a campaign of the next window that is still being
written is read only after that write ended. Only one window is being written at a time.

Before the swap nobody else writes the generation, so a guarded write never finds its campaign
moved; if it does, the rebuild fails rather than guess. After the swap the live projector writes
the new generation too: the writer then sends the campaigns' events through `Projection.apply`,
which re-reads and re-plans what moved (see `redis_writer.LaneWriter.shared`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from events import EventEnvelope
from projectors.adapters.campaigns_projection import CampaignsProjection, _Read
from projectors.domain.campaign_plan import CampaignPlan, StoredCampaign, plan_campaign
from projectors.domain.outcomes import ApplyResult
from projectors.replay.domain.tally import ProjectionTally
from readmodels.keyspace import generation_base
from service_runtime.redis_client import is_cluster

# Campaigns held folded before they are written (the window), and campaigns per write pipeline.
FOLD_CAMPAIGNS = 25_000
WRITE_CAMPAIGNS = 500
WRITES_IN_FLIGHT = 2


class GenerationMoved(RuntimeError):
    """The generation being rebuilt was written by someone else before the swap."""


@dataclass
class _Folded:
    read: _Read  # what `CampaignsProjection._read` returned for it: the guard's expectations
    stored: StoredCampaign  # as Redis holds it
    current: StoredCampaign  # after the events folded since


class CampaignFolder:
    def __init__(
        self,
        redis: Redis,
        projection: CampaignsProjection,
        generation: str,
        tally: ProjectionTally,
        max_campaigns: int = FOLD_CAMPAIGNS,
        write_campaigns: int = WRITE_CAMPAIGNS,
    ) -> None:
        self.redis = redis
        self.projection = projection
        self.generation = generation
        self.tally = tally
        self.max_campaigns = max_campaigns
        self.write_campaigns = write_campaigns
        self._base = generation_base(projection.prefix, generation)
        self._cluster = is_cluster(redis)
        self._folded: dict[str, _Folded] = {}
        self._writing: dict[str, _Folded] = {}
        self._write_task: asyncio.Task[None] | None = None

    async def write(self, envelopes: Sequence[EventEnvelope]) -> None:
        """Fold `envelopes` (this projection's, in an order that keeps each campaign's versions)."""
        by_campaign: dict[str, list[EventEnvelope]] = {}
        for envelope in envelopes:
            events = by_campaign.get(envelope.aggregate_id)
            if events is None:
                by_campaign[envelope.aggregate_id] = [envelope]
            else:
                events.append(envelope)
        folded = self._folded
        unread = [cid for cid in by_campaign if cid not in folded]
        if unread:
            if self._writing and any(cid in self._writing for cid in unread):
                await self._written()
            reads = await self.projection._read(self.redis, self._base, unread, self._cluster)
            for cid in unread:
                read = reads[cid]
                folded[cid] = _Folded(read, read.stored, read.stored)
        outcomes = []
        for cid, events in by_campaign.items():
            entry = folded[cid]
            plan = plan_campaign(entry.current, events)
            outcomes += plan.outcomes
            entry.current = StoredCampaign(plan.version, plan.state, plan.deleted, plan.owner, plan.parked)
        self.tally.add(ApplyResult(outcomes))
        if len(folded) >= self.max_campaigns:
            await self._written()
            self._writing, self._folded = folded, {}
            self._write_task = asyncio.create_task(self._write_out(self._writing))

    async def flush(self) -> None:
        """Write everything folded; return once it is in Redis."""
        await self._written()
        folded, self._folded = self._folded, {}
        await self._write_out(folded)

    async def close(self) -> None:
        if self._write_task is not None:
            self._write_task.cancel()
            await asyncio.gather(self._write_task, return_exceptions=True)
            self._write_task = None

    async def _written(self) -> None:
        """Wait for the window being written (raises what its write raised)."""
        task, self._write_task = self._write_task, None
        if task is not None:
            try:
                await task
            finally:
                self._writing = {}

    async def _write_out(self, folded: dict[str, _Folded]) -> None:
        changed = [
            cid
            for cid, entry in folded.items()
            if entry.current.version != entry.stored.version
            or entry.current.parked.keys() != entry.stored.parked.keys()
        ]
        chunks = [
            changed[start : start + self.write_campaigns]
            for start in range(0, len(changed), self.write_campaigns)
        ]
        # Two pipelines in flight: Python packs the next while Redis runs the last.
        in_flight = asyncio.Semaphore(WRITES_IN_FLIGHT)

        async def write_chunk(chunk: list[str]) -> None:
            async with in_flight:
                plans = {cid: _plan(folded[cid]) for cid in chunk}
                reads = {cid: folded[cid].read for cid in chunk}
                packed = await self.projection.packs(self.redis, self.generation)
                stale = await self.projection._write(
                    self.redis, self._base, False, plans, reads, self._cluster, packed
                )
            if stale:
                raise GenerationMoved(
                    f"{self.generation} was written by another writer during the rebuild "
                    f"(campaigns {', '.join(stale[:5])}); run the rebuild again"
                )

        tasks = [asyncio.ensure_future(write_chunk(chunk)) for chunk in chunks]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _plan(entry: _Folded) -> CampaignPlan:
    """The write from what Redis holds to the folded state, as one plan of the live projector."""
    current = entry.current
    return CampaignPlan(
        before=entry.stored,
        outcomes=[],
        version=current.version,
        state=current.state,
        deleted=current.deleted,
        owner=current.owner,
        applied=[],
        parked=current.parked,
    )
