"""One pass of a replay: read the source to the end it had when the pass began, apply, flush."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from projectors.replay.application.ports import EventSource, GenerationWriter, Progress
from projectors.replay.domain.plan import CatchUpPolicy

# How the full pass is run: `run_pass` itself, or an adapter that splits it over processes
# (`adapters/partitioned_pass.py`) and returns the same: the events read, all in Redis.
FullPass = Callable[[EventSource, GenerationWriter, Progress, str], Awaitable[int]]


async def run_pass(
    source: EventSource, writer: GenerationWriter, progress: Progress, label: str, exact: bool = True
) -> int:
    """Events read in this pass; all of them are in Redis when it returns."""
    current = await source.next_pass(exact)
    progress.start_pass(label, current.expected)
    events = 0
    async for batch in current.batches():
        await writer.write(batch)
        events += len(batch)
        progress.advance(len(batch))
    await writer.flush()
    return events


async def build_and_catch_up(
    source: EventSource,
    writer: GenerationWriter,
    progress: Progress,
    policy: CatchUpPolicy,
    full_pass: FullPass | None = None,
) -> tuple[int, int]:
    """The full pass, then catch-up passes until one is quiet; returns (events, passes)."""
    events = last = await (full_pass or run_pass)(source, writer, progress, f"replaying {source.name}")
    passes = 1
    catch_ups = 0
    while policy.another_pass(catch_ups, last):
        catch_ups += 1
        last = await run_pass(source, writer, progress, f"catch-up {catch_ups}", exact=False)
        events += last
        passes += 1
    return events, passes
