"""Sustained pipeline rate: the offered command rate stepped up until the pipeline stops keeping up.

Each step runs the freshness client (bench/freshness.py: open-loop POST /campaigns at the step's
rate, each 201 followed by `GET /campaigns/{id}?min_version=V`) for `seconds` with every service
running, and samples the backlog every 2 s: events recorded after the newest the relay's saved
watermark holds (it saves it about once a second, so ~1 s of commands at most) plus, for
every consumer group (three projections, two workers), records between its committed offset and
the end of its topic. A step holds when

- every command is accepted (no failure, and the achieved rate is at least 97% of the offered
  one: an open-loop client whose commands queue behind a slow server falls behind),
- freshness p99 stays under 100 ms and every read found its version,
- the backlog does not grow: the last quarter's samples are no higher on average than the second
  quarter's plus one second of commands, and once the last command is answered the backlog is
  gone within `DRAIN_SECONDS` (a pipeline that keeps up is behind only by its consumers' batching:
  the batched groups wait up to `batch_fetch_wait_ms` for a fetch, the projections commit every
  `projector_commit_seconds`; summed over the five groups that is a steady ~2 s of commands in
  the samples, which is not a backlog growing, while one that falls behind needs its backlog's
  worth of time to drain).

The figure is the highest rate of a step that held: steps go up from the first rate until one
does not hold; when the first does not, they go down by half a step until one holds (so the
figure says what the pipeline sustains on this machine, not only that it misses the start). The
reference beside it is the raw MongoDB transaction loop of bench/raw_limits.py on the same
database (the local server's limit for the command's transaction).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from bench import freshness
from bench.environment import committed_total, topic_partitions
from bench.memory import CpuWindow
from bench.report import Figure
from events import Topics
from events.log import relay_backlog
from readmodels.groups import NOTIFICATIONS_GROUP, REPORTS_GROUP, projection_group, worker_group
from service_runtime.background import BackgroundLoops
from service_runtime.settings import Settings

FRESHNESS_GOAL_MS = 100.0
RATE_GOAL = 200
# Once a step's last command is answered, its backlog must be gone within this long.
DRAIN_SECONDS = 5.0


@dataclass
class Step:
    rate: int
    seconds: float
    accepted: int
    scheduled: int
    command_failures: int
    reads_not_fresh: int
    achieved_per_second: float
    freshness_p50_ms: float
    freshness_p99_ms: float
    command_p99_ms: float
    backlog_samples: list[int] = field(default_factory=list)
    # Each source's largest sample over the step (see Backlog.sources).
    backlog_peaks: dict[str, int] = field(default_factory=dict)
    # From the last command answered to an empty backlog (None: not within DRAIN_SECONDS).
    drained_seconds: float | None = None
    cpu_cores: dict[str, float] = field(default_factory=dict)
    held: bool = False
    why_not: str = ""


class Backlog:
    """Unpublished events plus every consumer group's lag, summed."""

    def __init__(self, settings: Settings) -> None:
        topics = Topics(settings.topic_prefix)
        self.settings = settings
        self.groups = {
            topics.campaigns: [
                projection_group(settings, "campaigns"),
                projection_group(settings, "stats"),
                worker_group(settings, REPORTS_GROUP),
            ],
            topics.users: [
                projection_group(settings, "users"),
                projection_group(settings, "stats"),
                worker_group(settings, NOTIFICATIONS_GROUP),
            ],
        }
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        self.partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> Backlog:
        await self.admin.start()
        await self.consumer.start()
        for topic in self.groups:
            self.partitions[topic] = await topic_partitions(self.consumer, topic)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()
        await self.mongo.close()

    async def now(self) -> int:
        return sum((await self.sources()).values())

    async def sources(self) -> dict[str, int]:
        """The backlog by where it is: "unpublished", and each "group topic"'s lag."""
        # The events' recorded_at index serves this count.
        behind = {"unpublished": await relay_backlog(self.mongo[self.settings.mongo_db])}
        for topic, names in self.groups.items():
            end = sum((await self.consumer.end_offsets(self.partitions[topic])).values())
            for group in names:
                behind[f"{group} {topic}"] = max(0, end - await committed_total(self.admin, group, topic))
        return behind


def _growing(samples: list[int], rate: int, drained_seconds: float | None) -> str:
    """Why the backlog counts as growing, or "" if it held (see the module's docstring)."""
    if drained_seconds is None:
        left = samples[-1] if samples else 0
        return f"backlog not drained within {DRAIN_SECONDS:.0f} s of the last command ({left} at the end)"
    if not samples:
        return ""
    allowance = max(rate, 20)
    quarter = max(1, len(samples) // 4)
    second = samples[quarter : 2 * quarter] or samples[:quarter]
    last = samples[-quarter:]
    if statistics.fmean(last) > statistics.fmean(second) + allowance:
        return f"backlog grew from {statistics.fmean(second):.0f} to {statistics.fmean(last):.0f}"
    return ""


async def one_step(
    settings: Settings,
    command_url: str,
    query_url: str,
    token: str,
    rate: int,
    seconds: float,
    processes: Callable[[], dict[str, list[int]]],
) -> Step:
    samples: list[int] = []
    peaks: dict[str, int] = {}

    async def sample(backlog: Backlog) -> None:
        sources = await backlog.sources()
        samples.append(sum(sources.values()))
        for source, behind in sources.items():
            peaks[source] = max(peaks.get(source, 0), behind)

    async with Backlog(settings) as backlog:
        # A loop that a stop ends even if a client library swallows its cancellation.
        sampling = BackgroundLoops()

        async def keep_sampling() -> None:
            while await sampling.pause(2.0):
                await sample(backlog)

        window = CpuWindow(processes())
        sampling.start(keep_sampling(), "bench-backlog-sampler")
        try:
            run = await freshness.run(command_url, query_url, token, rate=rate, seconds=seconds)
        finally:
            await sampling.stop()
        cpu = window.shares()
        await sample(backlog)
        drained = await _drain(backlog)
    values = run.freshness_ms
    q = freshness._q
    achieved = run.accepted / run.seconds if run.seconds else 0.0
    step = Step(
        rate=rate,
        seconds=seconds,
        accepted=run.accepted,
        scheduled=run.scheduled,
        command_failures=run.failed,
        reads_not_fresh=run.read_failed,
        achieved_per_second=round(achieved, 1),
        freshness_p50_ms=round(q(values, 50), 1),
        freshness_p99_ms=round(q(values, 99), 1),
        command_p99_ms=round(q(run.command_ms, 99), 1),
        backlog_samples=samples,
        backlog_peaks=peaks,
        drained_seconds=drained,
        cpu_cores=cpu,
    )
    reasons = []
    if run.failed or achieved < rate * 0.97:
        reasons.append(f"{run.failed} commands failed, {achieved:.1f}/s accepted")
    if step.freshness_p99_ms >= FRESHNESS_GOAL_MS or run.read_failed:
        reasons.append(f"freshness p99 {step.freshness_p99_ms:.0f} ms, {run.read_failed} reads not fresh")
    growing = _growing(samples, rate, drained)
    if growing:
        reasons.append(growing)
    step.held = not reasons
    step.why_not = "; ".join(reasons)
    return step


async def _until_drained(backlog: Backlog, limit_seconds: float, poll_seconds: float) -> tuple[int, float]:
    """Poll until the backlog is empty or `limit_seconds` passed: what is left, and the wait."""
    started = time.monotonic()
    while True:
        left = await backlog.now()
        waited = time.monotonic() - started
        if left == 0 or waited > limit_seconds:
            return left, waited
        await asyncio.sleep(poll_seconds)


async def _drain(backlog: Backlog) -> float | None:
    """Seconds until the backlog is empty (polled every 0.1 s), or None past DRAIN_SECONDS."""
    left, waited = await _until_drained(backlog, DRAIN_SECONDS, 0.1)
    return None if left else round(waited, 2)


async def wait_drained(settings: Settings, limit_seconds: float = 120) -> int:
    """Until the backlog is empty (or the limit passed): what is left."""
    async with Backlog(settings) as backlog:
        left, _ = await _until_drained(backlog, limit_seconds, 0.5)
        return left


def next_rate(steps: list[Step], start: int, step: int, most: int) -> int | None:
    """The next rate to offer after `steps`, or None when the figure is known: up by `step` while
    every step held (to `most`); down by half a step while none has (above 0)."""
    if not steps:
        return start
    last = steps[-1]
    if last.held:
        up = last.rate + step
        return up if up <= most and all(s.held for s in steps) else None
    if any(s.held for s in steps):
        return None
    down = last.rate - max(step // 2, 1)
    return down if down > 0 else None


def figure(steps: list[Step], raw_limit: float, raw_concurrency: int) -> Figure:
    held = [s.rate for s in steps if s.held]
    best = max(held, default=0)
    # The step that did not hold right above the best one: what stopped the pipeline there.
    failed = min((s for s in steps if not s.held and s.rate > best), key=lambda s: s.rate, default=None)
    return Figure(
        key="sustained",
        title="Sustained pipeline rate (every service running)",
        measured=f"{best} commands/s"
        + (f" (at {failed.rate}/s: {failed.why_not})" if failed else " (no step failed)"),
        limit=f"{raw_limit:,.0f} txn/s (raw MongoDB transaction loop, concurrency {raw_concurrency})",
        ratio=None,
        goal=f"≥ {RATE_GOAL} commands/s",
        met=best >= RATE_GOAL,
        how=(
            "offered rates stepped up (BENCH_RATE_START, +BENCH_RATE_STEP, to BENCH_RATE_MAX), "
            "BENCH_RATE_SECONDS each, open loop as the freshness figure; a step holds if every "
            "command is accepted (≥ 97% of the offered rate achieved, none failed), freshness p99 "
            "< 100 ms, and the backlog (events recorded after the newest the relay's saved "
            "watermark holds + every consumer group's lag, sampled "
            f"every 2 s) does not grow and is gone within {DRAIN_SECONDS:.0f} s of the last command; "
            "up until a step does not hold, or, when the first does not, down by half a step until one does"
        ),
        data={"steps": [asdict(s) for s in steps], "raw_transactions_per_second": round(raw_limit, 1)},
    )
