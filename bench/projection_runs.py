"""Figures 2 and 5: the projector process and the replay over events already in Kafka.

The projector is measured as the real process (`campaigns serve projectors` on the load run's
own topics and keys), timed by its consumer group's committed offsets: from the first commit
to the commit that reaches the end of the topic. The replay is the replay tool's own rebuild
(`campaigns replay rebuild campaigns --source kafka`), run in-process: a new generation from the
same topic, caught up, swapped in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.environment import wait_for_group
from bench.memory import process_tree_memory
from bench.raw_limits import Rate
from projectors.replay.application.ports import NoProgress
from projectors.replay.bootstrap import replay
from projectors.replay.domain.plan import SourceName
from readmodels.groups import projection_group
from service_runtime.settings import Settings
from tests.support.services import RunningServices


@dataclass
class ProjectorRun:
    rate: Rate  # from the first committed batch to the last
    wall_seconds: float  # from the process's spawn, start-up included
    stats_seconds: float  # until the stats projection (same process, same topic) was done too
    rss_mib: float


async def projector_process(
    services: RunningServices, settings: Settings, topic: str, total: int
) -> ProjectorRun:
    spawned = time.perf_counter()
    services.start(["projectors"])
    samples = await wait_for_group(
        settings, projection_group(settings, "campaigns"), topic, total, limit_seconds=600
    )
    first = next((t, done) for t, done in samples if done > 0)
    end = samples[-1][0]
    stats = await wait_for_group(
        settings, projection_group(settings, "stats"), topic, total, limit_seconds=600
    )
    rss = sum(p.rss_mib for p in process_tree_memory(services.processes["projectors"].pid))
    return ProjectorRun(
        rate=Rate(total - first[1], end - first[0]),
        wall_seconds=end - spawned,
        stats_seconds=stats[-1][0] - spawned,
        rss_mib=rss,
    )


async def replay_rebuild(settings: Settings) -> tuple[Rate, dict[str, object]]:
    """`campaigns replay rebuild campaigns --source kafka`, run in-process through the tool's own
    composition root (no grace period: nothing reads the load run's keys)."""
    async with replay(settings) as tools:
        report = await tools.rebuild("campaigns", SourceName.KAFKA, NoProgress(), 0)
        split = tools.last_full_pass
    details: dict[str, object] = {
        "passes": report.passes,
        "invalid": report.invalid,
        "seconds": round(report.seconds, 2),
        # The full pass's processes: this one and those that reported a part (1: not split).
        "processes": 1 + len(split.helpers) if split else 1,
    }
    return Rate(report.events, report.seconds), details
