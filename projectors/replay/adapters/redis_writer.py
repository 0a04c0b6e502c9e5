"""Writes replayed events into generations through `Projection.apply`, several pipelines in flight.

Events are split into lanes by aggregate: each lane applies its batches one after another
(so an aggregate's events reach Redis in order), while the lanes run side by side, so
Python packs one lane's pipeline while Redis runs another's script calls. Batches are
queued with a small bound: reading the source never runs far ahead of Redis.

The campaigns projection goes through a `CampaignFolder` instead while this replay is the
generation's only writer (each campaign folded in memory, written once per window), and
through the lanes once `shared()` says the live projector writes the generation too (after the
swap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from redis.asyncio import Redis

from events import EventEnvelope
from projectors.adapters.campaigns_projection import CampaignsProjection
from projectors.application.ports import Projection
from projectors.replay.adapters.campaign_folder import FOLD_CAMPAIGNS, WRITE_CAMPAIGNS, CampaignFolder
from projectors.replay.application.ports import ClosingBatch
from projectors.replay.domain.tally import ProjectionTally

LANES = 4
BATCH_SIZE = 500
QUEUED_BATCHES = 2


@dataclass
class _Lane:
    projection: Projection
    generation: str
    tally: ProjectionTally
    queue: asyncio.Queue[list[EventEnvelope] | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUED_BATCHES)
    )
    buffer: list[EventEnvelope] = field(default_factory=list)


class LaneWriter:
    def __init__(
        self,
        redis: Redis,
        targets: Sequence[tuple[Projection, str]],
        lanes: int = LANES,
        batch_size: int = BATCH_SIZE,
        fold_campaigns: int = FOLD_CAMPAIGNS,
        write_campaigns: int = WRITE_CAMPAIGNS,
    ) -> None:
        """`fold_campaigns=0`: no folding, every event through `Projection.apply`."""
        self.redis = redis
        self.batch_size = batch_size
        self.tallies: dict[str, ProjectionTally] = {p.name: ProjectionTally() for p, _ in targets}
        self.targets: dict[str, str] = {p.name: generation for p, generation in targets}
        self._targets = [
            (projection, [_Lane(projection, generation, self.tallies[projection.name]) for _ in range(lanes)])
            for projection, generation in targets
        ]
        # Projection name -> its folder, while this writer is the generations' only writer.
        self._folders: dict[str, CampaignFolder] = {
            projection.name: CampaignFolder(
                redis, projection, generation, self.tallies[projection.name], fold_campaigns, write_campaigns
            )
            for projection, generation in targets
            if isinstance(projection, CampaignsProjection) and fold_campaigns > 0
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None

    async def start(self) -> None:
        for projection, lanes in self._targets:
            await projection.script.load(self.redis)
            self._tasks += [
                asyncio.create_task(self._run(lane), name=f"replay-{projection.name}") for lane in lanes
            ]

    async def write(self, envelopes: Sequence[EventEnvelope]) -> None:
        self._raise_failure()
        closing = isinstance(envelopes, ClosingBatch)
        for folder in self._folders.values():
            await folder.write([e for e in envelopes if folder.projection.accepts(e)], closing)
        laned = [(p, lanes) for p, lanes in self._targets if p.name not in self._folders]
        for envelope in envelopes if laned else ():
            for projection, lanes in laned:
                if projection.accepts(envelope):
                    lane = lanes[hash(envelope.aggregate_id) % len(lanes)]
                    lane.buffer.append(envelope)
                    if len(lane.buffer) >= self.batch_size:
                        await self._send(lane)

    async def flush(self) -> None:
        for folder in self._folders.values():
            await folder.flush()
        for _, lanes in self._targets:
            for lane in lanes:
                if lane.buffer:
                    await self._send(lane)
        for _, lanes in self._targets:
            for lane in lanes:
                await lane.queue.join()
        self._raise_failure()

    def fold_window(self, campaigns: int) -> int:
        """Hold at most `campaigns` folded from now on (a split pass shares the window among its
        processes); returns the window it replaced."""
        replaced = 0
        for folder in self._folders.values():
            replaced, folder.max_campaigns = folder.max_campaigns, max(1, campaigns)
        return replaced

    def shared(self) -> None:
        """From now on the live projector writes the generations too: no more folding (a folded
        write is guarded, but could not re-plan a campaign the projector moved). Call after a
        flush."""
        self._folders = {}

    async def close(self) -> None:
        for folder in self._folders.values():
            await folder.close()
        for _, lanes in self._targets:
            for lane in lanes:
                await lane.queue.put(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, lane: _Lane) -> None:
        batch, lane.buffer = lane.buffer, []
        await lane.queue.put(batch)

    async def _run(self, lane: _Lane) -> None:
        while (batch := await lane.queue.get()) is not None:
            try:
                if self._error is None:  # after a failure, drain without writing
                    lane.tally.add(
                        await lane.projection.apply(self.redis, lane.generation, batch, announce=False)
                    )
            except Exception as exc:
                self._error = exc
            finally:
                lane.queue.task_done()
        lane.queue.task_done()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error


def lane_writers(
    redis: Redis,
    projections: Mapping[str, Projection],
    lanes: int = LANES,
    batch_size: int = BATCH_SIZE,
    fold_campaigns: int = FOLD_CAMPAIGNS,
    write_campaigns: int = WRITE_CAMPAIGNS,
) -> Callable[[Mapping[str, str]], AbstractAsyncContextManager[LaneWriter]]:
    """The `WriterFactory` the use cases take: {projection: generation} -> a started writer."""

    @contextlib.asynccontextmanager
    async def open_writer(targets: Mapping[str, str]) -> AsyncIterator[LaneWriter]:
        chosen = [(projections[name], generation) for name, generation in targets.items()]
        writer = LaneWriter(redis, chosen, lanes, batch_size, fold_campaigns, write_campaigns)
        await writer.start()
        try:
            yield writer
        finally:
            await writer.close()

    return open_writer
