"""The consumer groups the monitor watches: one per projection and one per worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from events import Topics
from projectors.adapters.redis_projection import all_projections
from projectors.entrypoints.projectors import consumer_group, projection_topics
from projectors.entrypoints.workers import NOTIFICATIONS_GROUP, REPORTS_GROUP, group_id
from service_runtime.settings import Settings

GroupKind = Literal["projection", "worker"]


@dataclass(frozen=True)
class MonitoredGroup:
    name: str
    kind: GroupKind
    group_id: str
    topics: tuple[str, ...]
    # Its commits count as "projected" in the throughput: the projection that owns (and announces)
    # each event, so every event is counted exactly once.
    counts_projected: bool = False


def monitored_groups(settings: Settings) -> list[MonitoredGroup]:
    topics = Topics(settings.topic_prefix)
    groups = [
        MonitoredGroup(
            name=projection.name,
            kind="projection",
            group_id=consumer_group(settings, projection.name),
            topics=tuple(projection_topics(projection, topics)),
            counts_projected=projection.announces,
        )
        for projection in all_projections(settings.redis_prefix)
    ]
    # The workers' subscriptions (see `projectors.entrypoints.workers.build_workers`).
    groups.append(
        MonitoredGroup("notifications", "worker", group_id(settings, NOTIFICATIONS_GROUP), (topics.users,))
    )
    groups.append(MonitoredGroup("reports", "worker", group_id(settings, REPORTS_GROUP), (topics.campaigns,)))
    return groups


def worker_names(groups: list[MonitoredGroup]) -> list[str]:
    return [group.name for group in groups if group.kind == "worker"]


def projection_names(groups: list[MonitoredGroup]) -> list[str]:
    return [group.name for group in groups if group.kind == "projection"]
