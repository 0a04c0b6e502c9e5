"""Verify projections: rebuild each into a scratch generation and compare digests with the live one.

Exact on a quiet system. Under traffic the live generation and the source are compared at
slightly different moments, so a difference is re-checked after another catch-up pass (the
live projector meanwhile catches up too) before it is reported as drift. The scratch
generations are deleted whatever happens.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from projectors.replay.application.passes import FullPass, build_and_catch_up, run_pass
from projectors.replay.application.ports import Digests, EventSource, Generations, Progress
from projectors.replay.application.rebuild import WriterFactory
from projectors.replay.domain.key_diff import KeyDiff, diff_keys
from projectors.replay.domain.plan import CatchUpPolicy, scratch_generation
from projectors.replay.domain.tally import ProjectionTally


@dataclass(frozen=True)
class VerifyOptions:
    # Comparisons before a difference counts as drift, with a catch-up pass between them.
    attempts: int = 3
    settle_seconds: float = 1.0
    policy: CatchUpPolicy = field(default_factory=CatchUpPolicy)
    full_pass: FullPass | None = None  # as in RebuildOptions


@dataclass(frozen=True)
class ProjectionVerified:
    projection: str
    live_generation: str
    live_digest: str
    rebuilt_digest: str
    diff: KeyDiff | None
    tally: ProjectionTally

    @property
    def matches(self) -> bool:
        return self.live_digest == self.rebuilt_digest


@dataclass(frozen=True)
class VerifyReport:
    source: str
    events: int
    invalid: int
    projections: list[ProjectionVerified]

    @property
    def drift(self) -> bool:
        return not all(p.matches for p in self.projections)


async def verify(
    projections: list[str],
    source: EventSource,
    generations: Generations,
    digests: Digests,
    open_writer: WriterFactory,
    progress: Progress,
    options: VerifyOptions = VerifyOptions(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VerifyReport:
    token = secrets.token_hex(4)
    scratch = {p: scratch_generation(p, token) for p in projections}
    try:
        async with open_writer(scratch) as writer:
            events, _ = await build_and_catch_up(source, writer, progress, options.policy, options.full_pass)
            for attempt in range(1, options.attempts + 1):
                results = [await _compare(p, scratch[p], generations, digests) for p in projections]
                if all(live == rebuilt for _, live, rebuilt in results) or attempt == options.attempts:
                    break
                progress.say(f"digests differ; catching up again to rule out traffic ({attempt})")
                await sleep(options.settle_seconds)
                events += await run_pass(source, writer, progress, f"re-check {attempt}")
        verified = []
        for projection, (live_generation, live, rebuilt) in zip(projections, results, strict=True):
            diff = None
            if live != rebuilt:
                diff = diff_keys(
                    await digests.key_digests(live_generation),
                    await digests.key_digests(scratch[projection]),
                )
            verified.append(
                ProjectionVerified(
                    projection, live_generation, live, rebuilt, diff, writer.tallies[projection]
                )
            )
        return VerifyReport(source.name, events, source.invalid, verified)
    finally:
        for generation in scratch.values():
            await generations.clear(generation)


async def _compare(
    projection: str, scratch: str, generations: Generations, digests: Digests
) -> tuple[str, str, str]:
    live_generation = await generations.live(projection)
    return live_generation, await digests.digest(live_generation), await digests.digest(scratch)
