"""Rebuild projections into a new generation while the live projector keeps serving, then swap.

The protocol, and why no update is lost:

1. Under a per-projection lock (one rebuild at a time), take the live generation `p.N` and
   build `p.N+1` beside it (cleared first: leftovers of an interrupted rebuild). The live
   projector keeps writing `p.N`; readers keep reading it.
2. Full pass: read the source up to its end as of the start (Kafka: end offsets snapshot;
   MongoDB: every event the ordered index scan sees) and apply every event with the live
   projector's own atomic, version-guarded `Projection.apply`, into `p.N+1`, unannounced.
3. Catch-up passes: each from where the last stopped to the source's end as of its start,
   until one is quiet (`CatchUpPolicy`). This only narrows step 5's window.
4. Swap: `swap_generation` sets the pointer atomically (GETSET) and announces it on the
   generations channel. The projector resolves the pointer per batch
   (`claim_live_generation` in `ProjectionConsumer.handle`), so every batch that resolves it
   after the swap writes `p.N+1`; the query API drops its cached pointer on the announcement.
5. Final pass, its end taken AFTER the swap. A batch the projector resolved before the swap
   may still land in `p.N`; its records were in the source before the swap, so this pass
   applies them to `p.N+1` too. The version guard makes any event applied twice (by the
   projector and by a pass) a no-op, and parks an event that overtook its predecessor until
   that one arrives, so the order of the two writers does not matter.
6. After the grace period (readers' cached pointers refreshed, in-flight batches finished),
   the old generation is deleted by this command. If the command is interrupted before,
   `campaigns replay drop <generation>` removes it.

Right after the swap, until step 5 ends, a read may see an aggregate up to one catch-up pass
behind what the old generation showed; reads with `min_version` wait for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from projectors.replay.application.passes import FullPass, build_and_catch_up, run_pass
from projectors.replay.application.ports import (
    EventSource,
    Generations,
    GenerationWriter,
    Progress,
)
from projectors.replay.domain.plan import CatchUpPolicy, next_generation
from projectors.replay.domain.tally import ProjectionTally

# Opens a writer onto {projection: generation}; closing it waits for its last writes.
WriterFactory = Callable[[Mapping[str, str]], AbstractAsyncContextManager[GenerationWriter]]


@dataclass(frozen=True)
class RebuildOptions:
    grace_seconds: float
    policy: CatchUpPolicy = field(default_factory=CatchUpPolicy)
    # The full pass over several processes (None: this one reads it all).
    full_pass: FullPass | None = None


@dataclass(frozen=True)
class ProjectionRebuilt:
    projection: str
    old_generation: str | None
    new_generation: str
    tally: ProjectionTally
    old_keys_removed: int


@dataclass(frozen=True)
class RebuildReport:
    source: str
    events: int
    passes: int
    seconds: float
    invalid: int
    projections: list[ProjectionRebuilt]

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def rebuild(
    projections: list[str],
    source: EventSource,
    generations: Generations,
    open_writer: WriterFactory,
    progress: Progress,
    options: RebuildOptions,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RebuildReport:
    async with generations.exclusive(projections):
        started = time.perf_counter()
        targets: dict[str, str] = {}
        for projection in projections:
            live = await generations.claim_live(projection)
            target = next_generation(projection, live)
            leftovers = await generations.clear(target)
            if leftovers:
                progress.say(f"{target}: removed {leftovers} keys left by an interrupted rebuild")
            targets[projection] = target

        replaced: dict[str, str | None] = {}
        async with open_writer(targets) as writer:
            events, passes = await build_and_catch_up(
                source, writer, progress, options.policy, options.full_pass
            )
            writer.shared()
            for projection, target in targets.items():
                replaced[projection] = await generations.swap(projection, target)
                progress.say(f"{projection}: live generation is now {target} (was {replaced[projection]})")
            events += await run_pass(source, writer, progress, "after the swap")
            passes += 1
        seconds = time.perf_counter() - started

        old = {p: g for p, g in replaced.items() if g is not None and g != targets[p]}
        if old and options.grace_seconds > 0:
            names = ", ".join(old.values())
            progress.say(
                f"removing {names} after {options.grace_seconds:g} s of grace "
                f"(if interrupted: campaigns replay drop {' / '.join(old.values())})"
            )
            await sleep(options.grace_seconds)
        removed = {p: await generations.clear(g) for p, g in old.items()}

    return RebuildReport(
        source=source.name,
        events=events,
        passes=passes,
        seconds=seconds,
        invalid=source.invalid,
        projections=[
            ProjectionRebuilt(
                projection=p,
                old_generation=replaced[p],
                new_generation=targets[p],
                tally=writer.tallies[p],
                old_keys_removed=removed.get(p, 0),
            )
            for p in projections
        ],
    )


@dataclass(frozen=True)
class PlannedRebuild:
    """What `rebuild --dry-run` reports for one projection."""

    projection: str
    live_generation: str
    live_keys: int
    new_generation: str
    events: int


async def plan_rebuild(
    projections: list[str],
    aggregate_types: Mapping[str, frozenset[str]],
    source: EventSource,
    generations: Generations,
) -> list[PlannedRebuild]:
    """Count what a rebuild would read and replace, writing nothing."""
    sizes = await source.sizes()
    plans = []
    for projection in projections:
        live = await generations.live(projection)
        plans.append(
            PlannedRebuild(
                projection=projection,
                live_generation=live,
                live_keys=await generations.key_count(live),
                new_generation=next_generation(projection, live),
                events=sum(sizes.get(kind, 0) for kind in aggregate_types[projection]),
            )
        )
    return plans
