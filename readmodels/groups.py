"""The projections, the consumer groups that feed the read models, and the ones the monitor watches.

Every consumer group (its name, kind and the aggregates it reads) is declared once, in the event
contract's table `events.catalogue.CONSUMERS`; this module derives from it what the read side
needs: each projection's events and whether it announces what it applied, and the groups the
monitor measures. So the projectors (which subscribe), the workers and the monitor (which
measures their lag) agree without importing each other, and no group name is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from events import Topics
from events.catalogue import CONSUMERS, Consumer
from service_runtime.settings import Settings

GroupKind = Literal["projection", "worker"]

# The projections whose applied events are announced (on their bucket's announcement channel). Each event is
# announced by exactly one projection (the one owning its aggregate), so the feed carries it once.
ANNOUNCING = frozenset({"campaigns", "users"})


@dataclass(frozen=True)
class ProjectionSpec:
    name: str
    aggregate_types: frozenset[str]
    # Whether applied events are announced (keyspace.announcement_channel).
    announces: bool


def _consumer(name: str) -> Consumer:
    return next(consumer for consumer in CONSUMERS if consumer.name == name)


PROJECTION_SPECS: tuple[ProjectionSpec, ...] = tuple(
    ProjectionSpec(consumer.name, frozenset(consumer.aggregates), announces=consumer.name in ANNOUNCING)
    for consumer in CONSUMERS
    if consumer.kind == "projection"
)
PROJECTIONS: tuple[str, ...] = tuple(spec.name for spec in PROJECTION_SPECS)
SPECS_BY_NAME = {spec.name: spec for spec in PROJECTION_SPECS}

# The workers' groups, unprefixed (as the catalogue declares them).
NOTIFICATIONS_GROUP = _consumer("notifications").group
REPORTS_GROUP = _consumer("reports").group


def projection_group(settings: Settings, projection: str) -> str:
    """The consumer group of one projection's projectors."""
    return _consumer(projection).group_id(settings.topic_prefix)


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
    """Every consumer group of the catalogue, as the monitor measures it (the projections first)."""
    topics = Topics(settings.topic_prefix)
    return [
        MonitoredGroup(
            name=consumer.name,
            kind=consumer.kind,
            group_id=consumer.group_id(settings.topic_prefix),
            topics=tuple(projection_topics(frozenset(consumer.aggregates), topics)),
            counts_projected=consumer.kind == "projection" and consumer.name in ANNOUNCING,
        )
        for consumer in CONSUMERS
    ]


def worker_names(groups: list[MonitoredGroup]) -> list[str]:
    return [group.name for group in groups if group.kind == "worker"]


def projection_names(groups: list[MonitoredGroup]) -> list[str]:
    return [group.name for group in groups if group.kind == "projection"]
