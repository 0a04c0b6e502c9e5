"""A replay's full pass from Kafka read by several processes at once, each a part of the partitions.

The full pass is where a rebuild spends its time, and it is Python per event (decoding, folding,
packing the writes) on one core. Its partitions split cleanly: an aggregate's events share a
partition (the key is the aggregate id), so a process that reads a set of partitions holds every
event of its aggregates, folds them alone and writes them with the same guarded writes, into the
same generation, while the other processes write other aggregates. What they share in Redis (a
bucket's sorted indexes and sets, the stats' counters) takes commutative writes from atomic
scripts, as it does from the live projector's consumers on several partitions.

This process reads the largest part itself; each other part goes to a process of its own
(`python -m projectors.replay.entrypoints.share_process`, given its part on stdin), which reports
its progress and, at the end, its events, tallies and where it stopped. Only then does this pass
end: the catch-up passes, the swap and the pass after it run here, from where every part stopped.
Those processes can be started before the pass (`start_early`): a new Python process spends
about half a second importing before it reads a record, and the pass waits for its slowest part,
so they import while this one opens the topic, takes the rebuild's lock and reads the offsets.
One no pass used is stopped (`close`): its stdin closed empty, it exits without reading anything.
A part that fails fails the pass (the others are stopped), and the rebuild with it: the new
generation is not swapped in, and the next rebuild clears it.

A topic whose partitions were added after events were written has aggregates in two partitions;
two processes then write one aggregate, the second finds it moved (`GenerationMoved`) and the
rebuild fails: run it with `--processes 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition

from projectors.replay.adapters.kafka_source import KafkaEventSource, Share
from projectors.replay.adapters.redis_writer import LaneWriter
from projectors.replay.application.passes import run_pass
from projectors.replay.application.ports import EventSource, GenerationWriter, Progress
from projectors.replay.domain.tally import ProjectionTally
from service_runtime.settings import Settings

SHARE_MODULE = "projectors.replay.entrypoints.share_process"
# How long a share process given no order has to exit (it only finishes its imports).
UNUSED_EXIT_SECONDS = 10.0


@dataclass(frozen=True)
class ShareOrder:
    """What a share process is given (pickled on its stdin: the settings carry secrets, which
    neither a command line nor an environment should show)."""

    settings: Settings
    targets: dict[str, str]
    share: Share
    batch_size: int
    fold_campaigns: int


@dataclass(frozen=True)
class ShareDone:
    events: int
    invalid: int
    tallies: dict[str, ProjectionTally]
    positions: dict[TopicPartition, int]
    seconds: float
    peak_rss_mib: float

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "invalid": self.invalid,
            "tallies": {name: asdict(tally) for name, tally in self.tallies.items()},
            "positions": [[tp.topic, tp.partition, offset] for tp, offset in self.positions.items()],
            "seconds": self.seconds,
            "peak_rss_mib": self.peak_rss_mib,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShareDone:
        return cls(
            events=data["events"],
            invalid=data["invalid"],
            tallies={name: ProjectionTally(**tally) for name, tally in data["tallies"].items()},
            positions={TopicPartition(topic, p): offset for topic, p, offset in data["positions"]},
            seconds=data["seconds"],
            peak_rss_mib=data["peak_rss_mib"],
        )


class ShareFailed(RuntimeError):
    """A process of a split pass ended without reporting its part done."""


@dataclass
class PartitionedPass:
    """The `FullPass` of a rebuild or verify: split over `processes` when the source is Kafka
    and the pass holds at least `min_events` records, else `run_pass` in this process."""

    settings: Settings
    processes: int
    min_events: int
    batch_size: int
    # What each pass's other processes reported (the bench adds their peak RSS to this one's).
    helpers: list[ShareDone] = field(default_factory=list)
    # Share processes started ahead of a pass (`start_early`), waiting for their order.
    _waiting: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start_early(self, source: EventSource) -> None:
        """Start the processes a split of `source`'s next full pass would use, now, if it would
        be split (Kafka, at least `min_events` records): they import meanwhile."""
        if self.processes < 2 or not isinstance(source, KafkaEventSource):
            return
        if sum((await source.sizes()).values()) < self.min_events:
            return
        while len(self._waiting) < self.processes - 1:
            self._waiting.append(await _start_share_process())

    async def close(self) -> None:
        """Stop the processes `start_early` started that no pass used."""
        waiting, self._waiting = self._waiting, []
        await asyncio.gather(*(_stop_unused(process) for process in waiting))

    async def __call__(
        self, source: EventSource, writer: GenerationWriter, progress: Progress, label: str
    ) -> int:
        if self.processes < 2 or not isinstance(source, KafkaEventSource):
            return await run_pass(source, writer, progress, label)
        shares = await source.shares(self.processes)
        total = sum(end - first for share in shares for first, end in share.values())
        if len(shares) < 2 or total < self.min_events:
            return await run_pass(source, writer, progress, label)
        progress.say(
            f"{label}: {len(shares)} processes, partitions " + "; ".join(_named(share) for share in shares)
        )
        progress.start_pass(f"{label} ({len(shares)} processes)", total)
        # The held campaigns of all processes together stay within the setting's window.
        window = self.settings.replay_fold_campaigns
        fold = max(1, window // len(shares)) if window else 0
        targets = dict(writer.targets)
        orders = [ShareOrder(self.settings, targets, share, self.batch_size, fold) for share in shares[1:]]
        processes = [self._waiting.pop() if self._waiting else await _start_share_process() for _ in orders]
        helpers = [
            asyncio.create_task(_run_share(order, process, progress))
            for order, process in zip(orders, processes, strict=True)
        ]
        own_window = writer.fold_window(fold) if isinstance(writer, LaneWriter) and fold else 0
        try:
            events = 0
            async for batch in source.share_pass(shares[0]).batches():
                await writer.write(batch)
                events += len(batch)
                progress.advance(len(batch))
                _raise_if_failed(helpers)  # a part that failed fails the pass now, not at its end
            await writer.flush()
            done = await asyncio.gather(*helpers)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if own_window and isinstance(writer, LaneWriter):
                writer.fold_window(own_window)
        for part in done:
            source.moved(part.positions, part.invalid)
            for name, tally in part.tallies.items():
                writer.tallies[name].merge(tally)
            events += part.events
        self.helpers += done
        return events


async def _start_share_process() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        SHARE_MODULE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stop_unused(process: asyncio.subprocess.Process) -> None:
    """A share process given no order: its stdin closed empty, it exits at once (killed if not)."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        await asyncio.wait_for(process.communicate(), UNUSED_EXIT_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _run_share(order: ShareOrder, process: asyncio.subprocess.Process, progress: Progress) -> ShareDone:
    """One share process (started), given its order, to its report; killed if this task is cancelled."""
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    errors = asyncio.create_task(process.stderr.read())
    try:
        try:
            process.stdin.write(pickle.dumps(order))
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            # It ended before its order came (a failed start): its exit is reported below. (On a
            # pipe uvloop already closed, a write raises RuntimeError, "the handler is closed".)
            pass
        process.stdin.close()
        done: ShareDone | None = None
        async for line in process.stdout:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not ours: something the process printed
            if not isinstance(message, dict):
                continue
            if "progress" in message:
                progress.advance(message["progress"])
            elif "done" in message:
                done = ShareDone.from_json(message["done"])
        code = await process.wait()
        stderr = (await errors).decode(errors="replace").strip()
        if code != 0 or done is None:
            last = stderr.splitlines()[-1] if stderr else "no output"
            raise ShareFailed(
                f"the process replaying partitions {_named(order.share)} exited with {code}: {last}"
            )
        return done
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        errors.cancel()


def _raise_if_failed(helpers: list[asyncio.Task[ShareDone]]) -> None:
    for task in helpers:
        if task.done() and not task.cancelled() and task.exception() is not None:
            task.result()


def _named(share: Share) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(share))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB; 0 where /proc does not say."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return 0.0
