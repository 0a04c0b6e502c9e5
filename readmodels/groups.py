"""The projections, the consumer groups that feed the read models, and the ones the monitor watches.

Which events each projection reads, whether it announces what it applied, and every consumer
group's name are declared here, so the projectors (which subscribe), the workers and the
monitor (which measures their lag) agree without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from events import Topics
from service_runtime.settings import Settings

GroupKind = Literal["projection", "worker"]


@dataclass(frozen=True)
class ProjectionSpec:
    name: str
    aggregate_types: frozenset[str]
    # Whether applied events are announced on the events channel. Each event is announced by
    # exactly one projection (the one owning its aggregate), so the feed carries it once.
    announces: bool


PROJECTION_SPECS: tuple[ProjectionSpec, ...] = (
    ProjectionSpec("campaigns", frozenset({"campaign"}), announces=True),
    ProjectionSpec("users", frozenset({"user"}), announces=True),
    ProjectionSpec("stats", frozenset({"user", "campaign"}), announces=False),
)
PROJECTIONS: tuple[str, ...] = tuple(spec.name for spec in PROJECTION_SPECS)
SPECS_BY_NAME = {spec.name: spec for spec in PROJECTION_SPECS}

NOTIFICATIONS_GROUP = "worker.notifications"
REPORTS_GROUP = "worker.reports"


def projection_group(settings: Settings, projection: str) -> str:
    """The consumer group of one projection's projectors."""
    return f"{settings.topic_prefix}projector.{projection}"


def worker_group(settings: Settings, name: str) -> str:
    """A worker's consumer group, under the topic prefix: prefixed topics are another deployment's."""
    return f"{settings.topic_prefix}{name}"


def projection_topics(aggregate_types: frozenset[str], topics: Topics) -> list[str]:
    return [topics.for_aggregate(kind) for kind in sorted(aggregate_types, reverse=True)]


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
            name=spec.name,
            kind="projection",
            group_id=projection_group(settings, spec.name),
            topics=tuple(projection_topics(spec.aggregate_types, topics)),
            counts_projected=spec.announces,
        )
        for spec in PROJECTION_SPECS
    ]
    # The workers' subscriptions (see `workers.entrypoints.workers.build_workers`).
    groups.append(
        MonitoredGroup(
            "notifications", "worker", worker_group(settings, NOTIFICATIONS_GROUP), (topics.users,)
        )
    )
    groups.append(
        MonitoredGroup("reports", "worker", worker_group(settings, REPORTS_GROUP), (topics.campaigns,))
    )
    return groups


def worker_names(groups: list[MonitoredGroup]) -> list[str]:
    return [group.name for group in groups if group.kind == "worker"]


def projection_names(groups: list[MonitoredGroup]) -> list[str]:
    return [group.name for group in groups if group.kind == "projection"]
