"""Figures 2 and 5: the projector process and the replay over events already in Kafka.

The projector is measured as the real process (`campaigns serve projectors` on the load run's
own topics and keys), timed by its consumer group's committed offsets: from the first commit
to the commit that reaches the end of the topic. With `instances` > 1 that many processes share
the consumer groups, as `CAMPAIGNS_PROJECTORS_INSTANCES` runs them (Kafka splits the partitions
between them). Over the same window: the cores the projectors' processes, Redis and Kafka used,
and the whole machine's busy cores (what says whether the run was bound by one process or by
the machine). The replay is the replay tool's own rebuild
(`campaigns replay rebuild campaigns --source kafka`), run in-process: a new generation from the
same topic, caught up, swapped in.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.environment import wait_for_group, wait_for_members
from bench.memory import CpuWindow, process_tree_memory, tree_pids
from bench.raw_limits import Rate
from launcher.instances import plan_instances
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
    rss_mib: float  # summed over the instances
    instances: int = 1
    # Cores used from the first commit to the last, by group (projectors: every instance), and
    # the machine's (busy_cores, steal_cores, unaccounted_cores).
    cores: dict[str, float] = field(default_factory=dict)
    machine: dict[str, float] = field(default_factory=dict)


async def projector_process(
    services: RunningServices,
    settings: Settings,
    topic: str,
    total: int,
    *,
    instances: int = 1,
    servers: dict[str, list[int]] | None = None,
    feed: Callable[[], Awaitable[object]] | None = None,
) -> ProjectorRun:
    """`instances` projectors processes consuming the topic's `total` events from the start;
    `servers` (name: pids, e.g. redis and kafka): their cores over the timed window too. With
    `feed`, the events are produced by it once every instance holds its share of each consumer
    group: instances started together otherwise rebalance within the timed window (the first to
    join takes every partition, and the others get theirs only when its next heartbeat hears of
    them, seconds later; events it had applied and not yet committed are then applied again)."""
    spawned = time.perf_counter()
    # Named and given their metrics ports as the launcher plans them.
    scaled = settings.model_copy(update={"projectors_instances": instances})
    planned = plan_instances(scaled, ["projectors"])
    for instance in planned:
        port = instance.metrics_port
        services.start_instance(instance.name, instance.service, projectors_metrics_port=port)
    names = [instance.name for instance in planned]
    if feed is not None:
        groups = [projection_group(settings, name) for name in ("campaigns", "users", "stats")]
        await wait_for_members(settings, groups, instances)
        await feed()
    window: list[CpuWindow] = []

    def first_commit() -> None:
        groups = {"projectors": [pid for name in names for pid in tree_pids(services.processes[name].pid)]}
        window.append(CpuWindow({**groups, **(servers or {})}))

    samples = await wait_for_group(
        settings,
        projection_group(settings, "campaigns"),
        topic,
        total,
        limit_seconds=600,
        on_first_commit=first_commit,
    )
    cores = window[0].shares() if window else {}
    machine = window[0].machine if window else {}
    first = next((t, done) for t, done in samples if done > 0)
    end = samples[-1][0]
    stats = await wait_for_group(
        settings, projection_group(settings, "stats"), topic, total, limit_seconds=600
    )
    rss = sum(p.rss_mib for name in names for p in process_tree_memory(services.processes[name].pid))
    return ProjectorRun(
        rate=Rate(total - first[1], end - first[0]),
        wall_seconds=end - spawned,
        stats_seconds=stats[-1][0] - spawned,
        rss_mib=rss,
        instances=instances,
        cores=cores,
        machine=machine,
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
