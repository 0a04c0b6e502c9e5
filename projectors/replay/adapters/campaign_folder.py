"""The campaigns projection in a replay: every campaign folded in memory, written once per window.

A generation being rebuilt has one writer until the swap (this replay), so its state need not
round-trip through Redis after every batch as the live projector's does. The folder keeps each
campaign it has seen (a `_Folded`: compact, its document as Redis stored it and its new fields as
JSON, not as dicts of objects): what Redis holds for it (read once, on its first event in the
window) and what the events read since then made of it, planned by the live projector's own
`plan_campaign`, event by event, in order. When `max_campaigns` are held (and at the end of
every pass), each changed campaign is written once, from what Redis holds to its folded state,
by the live projector's own guarded write (`CampaignsProjection._write`): the keys and values
are those the live projector writes for the same events, only without the intermediate states.
So a campaign's five events cost one read, five in-memory plans and one write instead of five of
each; the window is a setting, and memory is bounded by it, never by the log. The Kafka source
reads one partition at a time and ends each with a `ClosingBatch`, after which no campaign held
has an event left: the window is written out then too, so a window of one partition's campaigns
folds every campaign whole (a process reads several partitions).

The write of a full (or closed) window runs in the background, `write_campaigns` campaigns per
pipeline, while the next window is read and folded; a campaign of the next window that is still
being written is read only after that write ended. Only one window is being written at a time,
and each campaign is let go as soon as its pipeline is written: the window being folded and what
is left of the one being written hold `max_campaigns` together (a batch of new campaigns waits
for room), so the peak is one window, not two.

Before the swap nobody else writes the generation, so a guarded write never finds its campaign
moved; if it does, the rebuild fails rather than guess. After the swap the live projector writes
the new generation too: the writer then sends the campaigns' events through `Projection.apply`,
which re-reads and re-plans what moved (see `redis_writer.LaneWriter.shared`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from events import EventEnvelope
from projectors.adapters.campaigns_projection import CampaignsProjection, StoredForm, _Read, stored_fields
from projectors.domain.campaign_plan import CampaignPlan, StoredCampaign, plan_campaign
from projectors.domain.outcomes import ApplyResult
from projectors.replay.domain.tally import ProjectionTally
from readmodels.keyspace import generation_base
from service_runtime.redis_client import is_cluster

# Campaigns held folded before they are written (the window), and campaigns per write pipeline.
FOLD_CAMPAIGNS = 10_000
WRITE_CAMPAIGNS = 500
WRITES_IN_FLIGHT = 2


class GenerationMoved(RuntimeError):
    """The generation being rebuilt was written by someone else before the swap."""


# A held campaign's fields while no event changed them: those of its pre-image (`before`).
_AS_BEFORE = b""


@dataclass(slots=True)
class _Folded:
    """One held campaign, compact (with a pre-image and new fields ~1.1 KiB traced and ~1.4 KiB of
    RSS, against ~1.7 of RSS as a pre-image's JSON and the read's objects: the window is the
    replay's peak memory). What Redis held for it (the guard's expectations, its document in the
    stored form the read returned, decoded only when an event or the write needs it) and what the
    events folded since made of it (the fields as their JSON; the live projector round-trips them
    through JSON in Redis too). Owners are interned (a few thousand, each in many campaigns); no
    parked entries, None."""

    stored_version: int
    stored_deleted: bool
    stored_owner: str
    stored_parked: dict[int, EventEnvelope] | None
    parked_count: int
    before: bytes | None  # the stored document; None if never created or deleted
    version: int
    state: bytes | None  # the fields' JSON; `_AS_BEFORE` while no event changed them
    deleted: bool
    owner: str
    parked: dict[int, EventEnvelope] | None

    @classmethod
    def of(cls, form: StoredForm) -> _Folded:
        owner = sys.intern(form.owner)
        parked = form.parked or None
        return cls(
            form.version, form.deleted, owner, parked, form.parked_count,
            form.document, form.version, _AS_BEFORE, form.deleted, owner, parked,
        )  # fmt: skip

    def _new_fields(self) -> dict[str, Any] | None:
        """The fields the events changed them to (not while `_AS_BEFORE`)."""
        return None if self.state is None else orjson.loads(self.state)

    def current(self) -> StoredCampaign:
        state = stored_fields(self.before) if self.state is _AS_BEFORE else self._new_fields()
        return StoredCampaign(self.version, state, self.deleted, self.owner, self.parked or {})

    def fold(self, given: StoredCampaign, plan: CampaignPlan) -> None:
        """Keep what `plan_campaign(given, ...)` made of it."""
        if plan.state is not given.state:
            self.state = None if plan.state is None else _compact(plan.state)
        self.version, self.deleted, self.owner = plan.version, plan.deleted, sys.intern(plan.owner)
        self.parked = plan.parked or None

    @property
    def changed(self) -> bool:
        return (
            self.version != self.stored_version
            or (self.parked or {}).keys() != (self.stored_parked or {}).keys()
        )

    def write(self) -> tuple[CampaignPlan, _Read]:
        """The write from what Redis holds to the folded state, as one plan of the live projector,
        and the read it guards on."""
        before = stored_fields(self.before)
        # The same object when no event changed the fields: the write then leaves the document be.
        state = before if self.state is _AS_BEFORE else self._new_fields()
        stored = StoredCampaign(
            self.stored_version, before, self.stored_deleted, self.stored_owner, self.stored_parked or {}
        )
        plan = CampaignPlan(
            before=stored,
            outcomes=[],
            version=self.version,
            state=state,
            deleted=self.deleted,
            owner=self.owner,
            applied=[],
            parked=self.parked or {},
        )
        return plan, _Read(stored, self.parked_count)


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
        self._released = asyncio.Event()  # set whenever written campaigns leave `_writing`

    async def write(self, envelopes: Sequence[EventEnvelope], closing: bool = False) -> None:
        """Fold `envelopes` (this projection's, in an order that keeps each campaign's versions);
        `closing`: no campaign held has an event left in this pass, so the window is written out
        now (in the background), not once it is full."""
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
            await self._room_for(len(unread))
            forms = await self.projection._read_stored(self.redis, self._base, unread, self._cluster)
            for cid in unread:
                folded[cid] = _Folded.of(forms[cid])
        outcomes = []
        for cid, events in by_campaign.items():
            entry = folded[cid]
            given = entry.current()
            plan = plan_campaign(given, events)
            outcomes += plan.outcomes
            entry.fold(given, plan)
        self.tally.add(ApplyResult(outcomes))
        if len(folded) >= self.max_campaigns or (closing and folded):
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

    async def _room_for(self, campaigns: int) -> None:
        """Wait until `campaigns` more fit beside those held: the window being folded and what is
        left of the one being written hold `max_campaigns` at most (a batch may overshoot)."""
        while (task := self._write_task) is not None and (
            len(self._folded) + len(self._writing) + campaigns > self.max_campaigns
        ):
            if task.done():
                await self._written()
                return
            self._released.clear()
            released = asyncio.ensure_future(self._released.wait())
            try:
                await asyncio.wait({task, released}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                released.cancel()

    async def _written(self) -> None:
        """Wait for the window being written (raises what its write raised)."""
        task, self._write_task = self._write_task, None
        if task is not None:
            try:
                await task
            finally:
                self._writing = {}

    async def _write_out(self, folded: dict[str, _Folded]) -> None:
        changed = []
        for cid, entry in list(folded.items()):
            if entry.changed:
                changed.append(cid)
            else:
                del folded[cid]  # nothing to write: Redis holds what a read of it would fold from
        chunks = [
            changed[start : start + self.write_campaigns]
            for start in range(0, len(changed), self.write_campaigns)
        ]
        # Two pipelines in flight: Python packs the next while Redis runs the last.
        in_flight = asyncio.Semaphore(WRITES_IN_FLIGHT)

        async def write_chunk(chunk: list[str]) -> None:
            async with in_flight:
                plans, reads = {}, {}
                for cid in chunk:
                    plans[cid], reads[cid] = folded[cid].write()
                layout = await self.projection.layout(self.redis, self.generation)
                stale = await self.projection._write(
                    self.redis, self._base, False, plans, reads, self._cluster, layout
                )
                if not stale:
                    # Written: let it go now, not when the next window is full (a campaign read
                    # again from here on reads what was just written).
                    for cid in chunk:
                        del folded[cid]
                    self._released.set()
                del plans, reads
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


def _compact(state: dict[str, Any]) -> bytes:
    """The fields' JSON in a bytes object of its own size: orjson's result keeps the ~8 KiB it
    was written into (measured: 20,000 of them hold 156 MiB of RSS, their copies 11 MiB)."""
    return bytes(memoryview(orjson.dumps(state)))
